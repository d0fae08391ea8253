// Upwind advection: one forward step and its adjoints (gather form, no atomics), float32 and float64.
//
// Arrays (gpudp/backends/base.py): d, g: (Bu, F, N) -- F fields per velocity field; u, gu: (Bu, ndim, N),
// component k belongs to padded axis a = 3 - ndim + k. c_a = dt / dx_a; m = min(u_a, 0), p = max(u_a, 0).
//
// Forward, per cell i:
//     d'_i = d_i - sum_a c_a [ m_i (d_{i+e_a} - d_i) + p_i (d_i - d_{i-e_a}) ]
// Adjoint w.r.t. d (every cell j gathers what its neighbours' updates took from it):
//     gd_j = g_j + sum_a [ c_a (m_j - p_j) g_j
//                          - c_a m_L g_L   (L = j - e_a, whose upper neighbour is j)
//                          + c_a p_U g_U   (U = j + e_a, whose lower neighbour is j) ]
//     where L or U lies outside a non-periodic domain, a neumann ghost repeats d_j, adding + c_a p_j g_j
//     (lower end) or - c_a m_j g_j (upper end); a dirichlet ghost is a constant and adds nothing.
// Adjoint w.r.t. u_a (the u >= 0 branch at u = 0 exactly), summed over the F fields of one velocity:
//     gu_{a,i} += - c_a sum_f g_{f,i} (u_{a,i} < 0 ? d_{f,i+e_a} - d_{f,i} : d_{f,i} - d_{f,i-e_a})
//
// Kernels (suffix _f32 / _f64):
//   advect_forward     one step src -> dst over Bu*F*N threads; optionally copies src into ``save``
//   advect_adjoint_d   one transposed step for the d-gradient only, over Bu*F*N threads
//   advect_adjoint_du  one transposed step over Bu*N threads: the d-gradient of all F fields (when need_g)
//                      and the velocity gradient, accumulated into gu
#include "gpudp_common.cuh"

template <typename T>
__device__ __forceinline__ void advect_forward_impl(
    const T* __restrict__ src, T* __restrict__ dst, T* __restrict__ save, int do_save,
    const T* __restrict__ u, int Bu, int F, int n0, int n1, int n2, int ndim,
    T c0, T c1, T c2, int b0, int b1, int b2)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const T c[3] = {c0, c1, c2};
    const gpudp_idx total = (gpudp_idx)Bu * F * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx field, cell, b, f;
        divmod(idx, g.N, field, cell);              // field = b * F + f
        divmod(field, F, b, f);
        const T* fs = src + field * g.N;            // this field
        const T* ub = u + b * ndim * g.N;           // this velocity field
        gpudp_idx pos[3];
        cell_coords(g, cell, pos);
        const T v = fs[cell];
        if (do_save) save[idx] = v;
        T acc = T(0);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            const T w = ub[(a - g.first) * g.N + cell];
            const T up = ghosted(fs, up_index(g, a, cell, pos[a]), g.bc[a], v);
            const T lo = ghosted(fs, down_index(g, a, cell, pos[a]), g.bc[a], v);
            acc += c[a] * (neg_part(w) * (up - v) + pos_part(w) * (v - lo));
        }
        dst[idx] = v - acc;
    }
}

// d-gradient of one step at ``cell`` of the field whose incoming gradient starts at ``gf``.
template <typename T>
__device__ __forceinline__ T adjoint_d_value(const T* __restrict__ gf, const T* __restrict__ ub,
                                             const Geom& g, const T c[3], gpudp_idx cell, const gpudp_idx pos[3])
{
    const T gv = gf[cell];
    T s = gv;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
        if (a < g.first) continue;
        const T* ua = ub + (a - g.first) * g.N;
        const T w = ua[cell];
        const T m = neg_part(w), p = pos_part(w);
        T t = c[a] * (m - p) * gv;
        const gpudp_idx L = down_index(g, a, cell, pos[a]);
        if (L >= 0) t -= c[a] * neg_part(ua[L]) * gf[L];
        else if (g.bc[a] == GPUDP_BC_NEUMANN) t += c[a] * p * gv;
        const gpudp_idx U = up_index(g, a, cell, pos[a]);
        if (U >= 0) t += c[a] * pos_part(ua[U]) * gf[U];
        else if (g.bc[a] == GPUDP_BC_NEUMANN) t -= c[a] * m * gv;
        s += t;
    }
    return s;
}

template <typename T>
__device__ __forceinline__ void advect_adjoint_d_impl(
    const T* __restrict__ gin, T* __restrict__ gout, const T* __restrict__ u,
    int Bu, int F, int n0, int n1, int n2, int ndim, T c0, T c1, T c2, int b0, int b1, int b2)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const T c[3] = {c0, c1, c2};
    const gpudp_idx total = (gpudp_idx)Bu * F * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx field, cell, b, f;
        divmod(idx, g.N, field, cell);
        divmod(field, F, b, f);
        gpudp_idx pos[3];
        cell_coords(g, cell, pos);
        gout[idx] = adjoint_d_value(gin + field * g.N, u + b * ndim * g.N, g, c, cell, pos);
    }
}

// One thread per (velocity field b, cell): loops over the F fields, so the velocity gradient of the cell is
// summed in registers and added to gu without atomics.
template <typename T>
__device__ __forceinline__ void advect_adjoint_du_impl(
    const T* __restrict__ gin, T* __restrict__ gout, int need_g, const T* __restrict__ d,
    const T* __restrict__ u, T* __restrict__ gu,
    int Bu, int F, int n0, int n1, int n2, int ndim, T c0, T c1, T c2, int b0, int b1, int b2)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const T c[3] = {c0, c1, c2};
    const gpudp_idx total = (gpudp_idx)Bu * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, cell;
        divmod(idx, g.N, b, cell);
        const T* ub = u + b * ndim * g.N;
        T* gub = gu + b * ndim * g.N;
        gpudp_idx pos[3];
        cell_coords(g, cell, pos);
        T acc[3] = {T(0), T(0), T(0)};
        for (int f = 0; f < F; ++f) {
            const gpudp_idx fo = (b * F + f) * g.N;   // offset of this field
            const T* gf = gin + fo;
            const T* df = d + fo;
            if (need_g) gout[fo + cell] = adjoint_d_value(gf, ub, g, c, cell, pos);
            const T gv = gf[cell];
            const T v = df[cell];
#pragma unroll
            for (int a = 0; a < 3; ++a) {
                if (a < g.first) continue;
                const T w = ub[(a - g.first) * g.N + cell];
                if (w < T(0)) {
                    const T up = ghosted(df, up_index(g, a, cell, pos[a]), g.bc[a], v);
                    acc[a] -= c[a] * gv * (up - v);
                } else {
                    const T lo = ghosted(df, down_index(g, a, cell, pos[a]), g.bc[a], v);
                    acc[a] -= c[a] * gv * (v - lo);
                }
            }
        }
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            gub[(a - g.first) * g.N + cell] += acc[a];
        }
    }
}

#define GPUDP_ADVECTION_KERNELS(SUFFIX, T)                                                                 \
    extern "C" __global__ void advect_forward_##SUFFIX(                                                     \
        const T* __restrict__ src, T* __restrict__ dst, T* __restrict__ save, int do_save,                 \
        const T* __restrict__ u, int Bu, int F, int n0, int n1, int n2, int ndim,                          \
        T c0, T c1, T c2, int b0, int b1, int b2)                                                          \
    {                                                                                                      \
        advect_forward_impl<T>(src, dst, save, do_save, u, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2); \
    }                                                                                                      \
    extern "C" __global__ void advect_adjoint_d_##SUFFIX(                                                   \
        const T* __restrict__ gin, T* __restrict__ gout, const T* __restrict__ u,                          \
        int Bu, int F, int n0, int n1, int n2, int ndim, T c0, T c1, T c2, int b0, int b1, int b2)         \
    {                                                                                                      \
        advect_adjoint_d_impl<T>(gin, gout, u, Bu, F, n0, n1, n2, ndim, c0, c1, c2, b0, b1, b2);           \
    }                                                                                                      \
    extern "C" __global__ void advect_adjoint_du_##SUFFIX(                                                  \
        const T* __restrict__ gin, T* __restrict__ gout, int need_g, const T* __restrict__ d,              \
        const T* __restrict__ u, T* __restrict__ gu,                                                       \
        int Bu, int F, int n0, int n1, int n2, int ndim, T c0, T c1, T c2, int b0, int b1, int b2)         \
    {                                                                                                      \
        advect_adjoint_du_impl<T>(gin, gout, need_g, d, u, gu, Bu, F, n0, n1, n2, ndim, c0, c1, c2,        \
                                  b0, b1, b2);                                                             \
    }

GPUDP_ADVECTION_KERNELS(f32, float)
GPUDP_ADVECTION_KERNELS(f64, double)

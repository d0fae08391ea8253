// Staggered (MAC) difference operators and the cell-centred Laplacian, float32 and float64.
//
// Cell arrays are (B, N). The staggered component of padded axis a is a (B, M_a) array laid out like the grid
// but with m_a = n_a + 1 entries along a on a non-periodic axis (faces 0 and n_a are the domain's boundary
// faces) and m_a = n_a on a periodic one; face j along a is the lower face of cell j. inv_a = 1 / dx_a.
//
//   stag_divergence          div_i = sum_a inv_a (u_a[i + e_a] - u_a[i])                 faces -> cells
//   stag_divergence_adjoint  its transpose: gu_a[j] = inv_a (g_{j-1} - g_j), cells outside the domain
//                            contribute 0 (periodic: wrap)                               cells -> faces of a
//   stag_gradient            grad_a[j] = inv_a (p_j - p_{j-1}) with ghost values (dirichlet 0); 0 on
//                            neumann boundary faces                                      cells -> faces of a
//   stag_gradient_adjoint    its transpose: gp_i = sum_a inv_a (G_a[i] - G_a[i + e_a]), neumann boundary
//                            faces excluded                                              faces -> cells
//   laplace                  sum_a inv_a^2 (p_{i+e_a} - 2 p_i + p_{i-e_a}) with ghost values  cells -> cells
//
// The face-output kernels handle one axis per launch (``axis`` is the padded axis); the cell-output kernels
// take one face pointer per padded axis (padded axes' pointers are never read).
#include "gpudp_common.cuh"

// Entries of the face array of padded axis ``a`` along axis ``k``.
__device__ __forceinline__ gpudp_idx face_extent(const Geom& g, int a, int k)
{
    return g.n[k] + ((k == a && g.bc[a] != GPUDP_BC_PERIODIC) ? 1 : 0);
}

// Linear index in the face array of axis ``a`` of the face at position c (c[a] may be n_a on non-periodic a).
__device__ __forceinline__ gpudp_idx face_linear(const Geom& g, int a, gpudp_idx c0, gpudp_idx c1, gpudp_idx c2)
{
    return (c0 * face_extent(g, a, 1) + c1) * face_extent(g, a, 2) + c2;
}

// Face-output kernels: the face ``f`` (linear index in the array of ``axis``) split into the cell at
// position 0 along ``axis`` of its line (``line``), the face's position ``j`` along ``axis``, and the
// axis's length, stride and boundary code.
struct FaceLine {
    gpudp_idx line;   // cell index of position 0 along the axis
    gpudp_idx j;      // face position along the axis, 0 <= j < m_axis
    gpudp_idx n;      // cells along the axis
    gpudp_idx s;      // cell stride of the axis
    int bc;
};

__device__ __forceinline__ FaceLine face_line(const Geom& g, int axis, gpudp_idx f)
{
    const gpudp_idx m1 = face_extent(g, axis, 1), m2 = face_extent(g, axis, 2);
    gpudp_idx r, c0, c1, c2;
    divmod(f, m2, r, c2);
    divmod(r, m1, c0, c1);
    FaceLine fl;
    if (axis == 0) { fl.j = c0; c0 = 0; fl.n = g.n[0]; fl.s = g.s[0]; fl.bc = g.bc[0]; }
    else if (axis == 1) { fl.j = c1; c1 = 0; fl.n = g.n[1]; fl.s = g.s[1]; fl.bc = g.bc[1]; }
    else { fl.j = c2; c2 = 0; fl.n = g.n[2]; fl.s = g.s[2]; fl.bc = g.bc[2]; }
    fl.line = (c0 * g.n[1] + c1) * g.n[2] + c2;
    return fl;
}

__device__ __forceinline__ gpudp_idx face_count(const Geom& g, int axis)
{
    return face_extent(g, axis, 0) * face_extent(g, axis, 1) * face_extent(g, axis, 2);
}

template <typename T>
__device__ __forceinline__ void stag_gradient_impl(const T* __restrict__ p, T* __restrict__ out, int B, int axis,
                                                   int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T inv)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const gpudp_idx M = face_count(g, axis);
    const gpudp_idx total = (gpudp_idx)B * M;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, f;
        divmod(idx, M, b, f);
        const FaceLine fl = face_line(g, axis, f);
        const T* pl = p + b * g.N + fl.line;
        const gpudp_idx j = fl.j;
        T val;
        if (fl.bc == GPUDP_BC_PERIODIC) {
            val = inv * (pl[j * fl.s] - pl[(j == 0 ? fl.n - 1 : j - 1) * fl.s]);
        } else if (fl.bc == GPUDP_BC_DIRICHLET) {
            const T hi = j < fl.n ? pl[j * fl.s] : T(0);
            const T lo = j >= 1 ? pl[(j - 1) * fl.s] : T(0);
            val = inv * (hi - lo);
        } else {
            val = (j == 0 || j == fl.n) ? T(0) : inv * (pl[j * fl.s] - pl[(j - 1) * fl.s]);
        }
        out[idx] = val;
    }
}

template <typename T>
__device__ __forceinline__ void stag_divergence_adjoint_impl(const T* __restrict__ gc, T* __restrict__ out, int B,
                                                             int axis, int n0, int n1, int n2, int ndim,
                                                             int b0, int b1, int b2, T inv)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const gpudp_idx M = face_count(g, axis);
    const gpudp_idx total = (gpudp_idx)B * M;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, f;
        divmod(idx, M, b, f);
        const FaceLine fl = face_line(g, axis, f);
        const T* gl = gc + b * g.N + fl.line;
        const gpudp_idx j = fl.j;
        T val;
        if (fl.bc == GPUDP_BC_PERIODIC) {
            val = inv * (gl[(j == 0 ? fl.n - 1 : j - 1) * fl.s] - gl[j * fl.s]);
        } else {
            const T below = j >= 1 ? gl[(j - 1) * fl.s] : T(0);
            const T above = j < fl.n ? gl[j * fl.s] : T(0);
            val = inv * (below - above);
        }
        out[idx] = val;
    }
}

template <typename T>
__device__ __forceinline__ void stag_divergence_impl(const T* __restrict__ f0, const T* __restrict__ f1,
                                                     const T* __restrict__ f2, T* __restrict__ out, int B,
                                                     int n0, int n1, int n2, int ndim, int b0, int b1, int b2,
                                                     T inv0, T inv1, T inv2)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const T* faces[3] = {f0, f1, f2};
    const T inv[3] = {inv0, inv1, inv2};
    const gpudp_idx total = (gpudp_idx)B * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, cell;
        divmod(idx, g.N, b, cell);
        gpudp_idx c[3];
        cell_coords(g, cell, c);
        T acc = T(0);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            const T* fa = faces[a] + b * face_count(g, a);
            gpudp_idx h[3] = {c[0], c[1], c[2]};
            h[a] = (c[a] + 1 == g.n[a] && g.bc[a] == GPUDP_BC_PERIODIC) ? 0 : c[a] + 1;
            acc += inv[a] * (fa[face_linear(g, a, h[0], h[1], h[2])] - fa[face_linear(g, a, c[0], c[1], c[2])]);
        }
        out[idx] = acc;
    }
}

template <typename T>
__device__ __forceinline__ void stag_gradient_adjoint_impl(const T* __restrict__ f0, const T* __restrict__ f1,
                                                           const T* __restrict__ f2, T* __restrict__ out, int B,
                                                           int n0, int n1, int n2, int ndim,
                                                           int b0, int b1, int b2, T inv0, T inv1, T inv2)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const T* faces[3] = {f0, f1, f2};
    const T inv[3] = {inv0, inv1, inv2};
    const gpudp_idx total = (gpudp_idx)B * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, cell;
        divmod(idx, g.N, b, cell);
        gpudp_idx c[3];
        cell_coords(g, cell, c);
        T acc = T(0);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            const T* fa = faces[a] + b * face_count(g, a);
            const bool neumann = g.bc[a] == GPUDP_BC_NEUMANN;
            gpudp_idx h[3] = {c[0], c[1], c[2]};
            h[a] = (c[a] + 1 == g.n[a] && g.bc[a] == GPUDP_BC_PERIODIC) ? 0 : c[a] + 1;
            // face c[a] (lower) carries p_i with +; face c[a]+1 (upper) carries p_i with -
            const T lower = (neumann && c[a] == 0) ? T(0) : fa[face_linear(g, a, c[0], c[1], c[2])];
            const T upper = (neumann && c[a] + 1 == g.n[a]) ? T(0) : fa[face_linear(g, a, h[0], h[1], h[2])];
            acc += inv[a] * (lower - upper);
        }
        out[idx] = acc;
    }
}

template <typename T>
__device__ __forceinline__ void laplace_impl(const T* __restrict__ p, T* __restrict__ out, int B,
                                             int n0, int n1, int n2, int ndim, int b0, int b1, int b2,
                                             T inv0, T inv1, T inv2)
{
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const T inv[3] = {inv0, inv1, inv2};
    const gpudp_idx total = (gpudp_idx)B * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, cell;
        divmod(idx, g.N, b, cell);
        const T* pb = p + b * g.N;
        gpudp_idx c[3];
        cell_coords(g, cell, c);
        const T v = pb[cell];
        T acc = T(0);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            const T up = ghosted(pb, up_index(g, a, cell, c[a]), g.bc[a], v);
            const T lo = ghosted(pb, down_index(g, a, cell, c[a]), g.bc[a], v);
            acc += inv[a] * inv[a] * (up - T(2) * v + lo);
        }
        out[idx] = acc;
    }
}

#define GPUDP_DIFFERENCE_KERNELS(SUFFIX, T)                                                                \
    extern "C" __global__ void stag_gradient_##SUFFIX(                                                      \
        const T* __restrict__ p, T* __restrict__ out, int B, int axis,                                     \
        int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T inv)                                   \
    {                                                                                                      \
        stag_gradient_impl<T>(p, out, B, axis, n0, n1, n2, ndim, b0, b1, b2, inv);                         \
    }                                                                                                      \
    extern "C" __global__ void stag_divergence_adjoint_##SUFFIX(                                            \
        const T* __restrict__ g, T* __restrict__ out, int B, int axis,                                     \
        int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T inv)                                   \
    {                                                                                                      \
        stag_divergence_adjoint_impl<T>(g, out, B, axis, n0, n1, n2, ndim, b0, b1, b2, inv);               \
    }                                                                                                      \
    extern "C" __global__ void stag_divergence_##SUFFIX(                                                    \
        const T* __restrict__ f0, const T* __restrict__ f1, const T* __restrict__ f2, T* __restrict__ out, \
        int B, int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T inv0, T inv1, T inv2)           \
    {                                                                                                      \
        stag_divergence_impl<T>(f0, f1, f2, out, B, n0, n1, n2, ndim, b0, b1, b2, inv0, inv1, inv2);       \
    }                                                                                                      \
    extern "C" __global__ void stag_gradient_adjoint_##SUFFIX(                                              \
        const T* __restrict__ f0, const T* __restrict__ f1, const T* __restrict__ f2, T* __restrict__ out, \
        int B, int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T inv0, T inv1, T inv2)           \
    {                                                                                                      \
        stag_gradient_adjoint_impl<T>(f0, f1, f2, out, B, n0, n1, n2, ndim, b0, b1, b2, inv0, inv1, inv2); \
    }                                                                                                      \
    extern "C" __global__ void laplace_##SUFFIX(                                                            \
        const T* __restrict__ p, T* __restrict__ out, int B,                                               \
        int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T inv0, T inv1, T inv2)                  \
    {                                                                                                      \
        laplace_impl<T>(p, out, B, n0, n1, n2, ndim, b0, b1, b2, inv0, inv1, inv2);                        \
    }

GPUDP_DIFFERENCE_KERNELS(f32, float)
GPUDP_DIFFERENCE_KERNELS(f64, double)

// Batched preconditioned conjugate gradients on A = -laplace (cell-centred, ghost values as in difference.cu),
// float32 and float64 vectors with float64 scalars.
//
// B independent systems of N cells. Per-system scalars live on the device in ``sc`` (B rows of SC_WIDTH
// doubles, columns SC_*), so the iteration never waits for the host:
//
//   cg_apply_*   p_new = z + beta p_old with z = M^-1 r computed on the fly (M = diag(A) for Jacobi, else I),
//                q = A p_new (the stencil reads p_new at the neighbours by recomputing it there, so p_new and
//                q come out of one pass), and per-block partial sums of p_new . q
//   cg_alpha     per system: pAp = sum of the partials; alpha = rz / pAp
//   cg_update_*  x += alpha p, r -= alpha q, and per-block partial sums of r . z and r . r of the new r
//   cg_beta      per system: rz_new, rr; beta = rz_new / rz; the system stays active while rr > tol^2 bb
//
// Blocks of the vector kernels form a (gridDim.x blocks per system) x (systems) grid; the per-block partials
// of system b sit at partial[b * gridDim.x + blockIdx.x] (times 2 for cg_update). The scalar kernels run one
// block per system. Inactive (converged or broken-down) systems are skipped whole, so their x stays fixed.
// cg_update with alpha = 0 only computes the dot products: that initialises rz and rr (cg_beta with init=1).
#include "gpudp_common.cuh"

#define SC_RZ 0       // r . z
#define SC_PAP 1      // p . A p
#define SC_RR 2       // r . r
#define SC_BB 3       // b . b of the (mean-free) right-hand side
#define SC_ALPHA 4
#define SC_BETA 5
#define SC_ACTIVE 6   // 1 while the system iterates, else 0
#define SC_ITERS 7    // iterations done while active
#define SC_WIDTH 8

// Diagonal entry of A = -laplace contributed by one axis, in units of 1/dx^2, at position i.
__device__ __forceinline__ double axis_weight(gpudp_idx i, gpudp_idx n, int bc)
{
    if (bc == GPUDP_BC_NEUMANN) return 2.0 - (i == 0 ? 1.0 : 0.0) - (i == n - 1 ? 1.0 : 0.0);
    if (bc == GPUDP_BC_PERIODIC) return n == 1 ? 0.0 : 2.0;   // a 1-cell periodic axis is its own neighbour
    return 2.0;
}

// diag(A) at a cell whose per-axis weights are w (summed in axis order, so every thread gets the same bits).
__device__ __forceinline__ double diag_of(const Geom& g, const double h[3], const double w[3])
{
    double d = 0.0;
#pragma unroll
    for (int a = 0; a < 3; ++a)
        if (a >= g.first) d += h[a] * w[a];
    return d;
}

// z = M^-1 r at one cell.
template <typename T>
__device__ __forceinline__ T precondition(T r, double diag, int jacobi)
{
    return (jacobi && diag > 0.0) ? (T)((double)r / diag) : r;
}

// p_new at cell j: z_j + beta p_old_j (p_old is not read when beta == 0).
template <typename T>
__device__ __forceinline__ T new_direction(const T* __restrict__ r, const T* __restrict__ p_old, gpudp_idx j,
                                           double diag, double beta, int jacobi)
{
    const T z = precondition(r[j], diag, jacobi);
    return beta != 0.0 ? (T)((double)z + beta * (double)p_old[j]) : z;
}

template <typename T>
__device__ __forceinline__ void cg_apply_impl(const T* __restrict__ r, const T* __restrict__ p_old,
                                              T* __restrict__ p_new, T* __restrict__ q,
                                              double* __restrict__ partial, const double* __restrict__ sc, int B,
                                              int n0, int n1, int n2, int ndim, int b0, int b1, int b2,
                                              double inv0, double inv1, double inv2, int jacobi)
{
    __shared__ double sh[GPUDP_BLOCK];
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const double h[3] = {inv0 * inv0, inv1 * inv1, inv2 * inv2};
    for (int b = blockIdx.y; b < B; b += gridDim.y) {
        const double* s = sc + (gpudp_idx)b * SC_WIDTH;
        if (s[SC_ACTIVE] == 0.0) continue;   // uniform over the block
        const double beta = s[SC_BETA];
        const gpudp_idx off = (gpudp_idx)b * g.N;
        const T* rb = r + off;
        const T* pb = p_old + off;
        double acc = 0.0;
        for (gpudp_idx cell = thread_start(); cell < g.N; cell += thread_stride()) {
            gpudp_idx c[3];
            cell_coords(g, cell, c);
            double w[3] = {0.0, 0.0, 0.0};
#pragma unroll
            for (int a = 0; a < 3; ++a)
                if (a >= g.first) w[a] = axis_weight(c[a], g.n[a], g.bc[a]);
            const T v = new_direction(rb, pb, cell, diag_of(g, h, w), beta, jacobi);
            double Av = 0.0;
#pragma unroll
            for (int a = 0; a < 3; ++a) {
                if (a < g.first) continue;
                const double wa = w[a];
                T up, lo;
                const gpudp_idx U = up_index(g, a, cell, c[a]);
                if (U >= 0) {
                    w[a] = axis_weight(c[a] + 1 < g.n[a] ? c[a] + 1 : 0, g.n[a], g.bc[a]);
                    up = new_direction(rb, pb, U, diag_of(g, h, w), beta, jacobi);
                } else {
                    up = g.bc[a] == GPUDP_BC_DIRICHLET ? T(0) : v;
                }
                const gpudp_idx L = down_index(g, a, cell, c[a]);
                if (L >= 0) {
                    w[a] = axis_weight(c[a] > 0 ? c[a] - 1 : g.n[a] - 1, g.n[a], g.bc[a]);
                    lo = new_direction(rb, pb, L, diag_of(g, h, w), beta, jacobi);
                } else {
                    lo = g.bc[a] == GPUDP_BC_DIRICHLET ? T(0) : v;
                }
                w[a] = wa;
                Av += h[a] * (2.0 * (double)v - (double)up - (double)lo);
            }
            const T qv = (T)Av;
            p_new[off + cell] = v;
            q[off + cell] = qv;
            acc += (double)v * (double)qv;
        }
        const double total = block_sum(acc, sh);
        if (threadIdx.x == 0) partial[(gpudp_idx)b * gridDim.x + blockIdx.x] = total;
    }
}

template <typename T>
__device__ __forceinline__ void cg_update_impl(T* __restrict__ x, T* __restrict__ r, const T* __restrict__ p,
                                               const T* __restrict__ q, double* __restrict__ partial2,
                                               const double* __restrict__ sc, int B,
                                               int n0, int n1, int n2, int ndim, int b0, int b1, int b2,
                                               double inv0, double inv1, double inv2, int jacobi)
{
    __shared__ double sh[GPUDP_BLOCK];
    const Geom g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    const double h[3] = {inv0 * inv0, inv1 * inv1, inv2 * inv2};
    for (int b = blockIdx.y; b < B; b += gridDim.y) {
        const double* s = sc + (gpudp_idx)b * SC_WIDTH;
        if (s[SC_ACTIVE] == 0.0) continue;   // uniform over the block
        const double alpha = s[SC_ALPHA];
        const gpudp_idx off = (gpudp_idx)b * g.N;
        double rz = 0.0, rr = 0.0;
        for (gpudp_idx cell = thread_start(); cell < g.N; cell += thread_stride()) {
            const gpudp_idx o = off + cell;
            T rv = r[o];
            if (alpha != 0.0) {
                x[o] = (T)((double)x[o] + alpha * (double)p[o]);
                rv = (T)((double)rv - alpha * (double)q[o]);
                r[o] = rv;
            }
            double diag = 0.0;
            if (jacobi) {
                gpudp_idx c[3];
                cell_coords(g, cell, c);
                double w[3] = {0.0, 0.0, 0.0};
#pragma unroll
                for (int a = 0; a < 3; ++a)
                    if (a >= g.first) w[a] = axis_weight(c[a], g.n[a], g.bc[a]);
                diag = diag_of(g, h, w);
            }
            const T z = precondition(rv, diag, jacobi);
            rz += (double)rv * (double)z;
            rr += (double)rv * (double)rv;
        }
        const double total_rz = block_sum(rz, sh);
        const double total_rr = block_sum(rr, sh);
        if (threadIdx.x == 0) {
            const gpudp_idx k = ((gpudp_idx)b * gridDim.x + blockIdx.x) * 2;
            partial2[k] = total_rz;
            partial2[k + 1] = total_rr;
        }
    }
}

extern "C" __global__ void cg_alpha(const double* __restrict__ partial, double* __restrict__ sc, int B, int nblk)
{
    __shared__ double sh[GPUDP_BLOCK];
    for (int b = blockIdx.x; b < B; b += gridDim.x) {
        double* s = sc + (gpudp_idx)b * SC_WIDTH;
        if (s[SC_ACTIVE] == 0.0) continue;   // uniform over the block
        double acc = 0.0;
        for (int k = threadIdx.x; k < nblk; k += blockDim.x) acc += partial[(gpudp_idx)b * nblk + k];
        const double pAp = block_sum(acc, sh);
        if (threadIdx.x == 0) {
            s[SC_PAP] = pAp;
            if (pAp > 0.0) {
                s[SC_ALPHA] = s[SC_RZ] / pAp;
            } else {   // p = 0 (or not finite): nothing left to do for this system
                s[SC_ALPHA] = 0.0;
                s[SC_ACTIVE] = 0.0;
            }
        }
    }
}

extern "C" __global__ void cg_beta(const double* __restrict__ partial2, double* __restrict__ sc, int B, int nblk,
                                   double tol2, int init)
{
    __shared__ double sh[GPUDP_BLOCK];
    for (int b = blockIdx.x; b < B; b += gridDim.x) {
        double* s = sc + (gpudp_idx)b * SC_WIDTH;
        if (s[SC_ACTIVE] == 0.0) continue;   // uniform over the block
        double acc_rz = 0.0, acc_rr = 0.0;
        for (int k = threadIdx.x; k < nblk; k += blockDim.x) {
            const gpudp_idx o = ((gpudp_idx)b * nblk + k) * 2;
            acc_rz += partial2[o];
            acc_rr += partial2[o + 1];
        }
        const double rz = block_sum(acc_rz, sh);
        const double rr = block_sum(acc_rr, sh);
        if (threadIdx.x == 0) {
            if (init) {
                s[SC_BETA] = 0.0;
            } else {
                s[SC_BETA] = s[SC_RZ] > 0.0 ? rz / s[SC_RZ] : 0.0;
                s[SC_ITERS] += 1.0;
            }
            s[SC_RZ] = rz;
            s[SC_RR] = rr;
            // NaN compares false: a system that produced NaN stops instead of iterating on garbage.
            s[SC_ACTIVE] = (s[SC_BB] > 0.0 && rr > tol2 * s[SC_BB]) ? 1.0 : 0.0;
        }
    }
}

#define GPUDP_POISSON_KERNELS(SUFFIX, T)                                                                   \
    extern "C" __global__ void cg_apply_##SUFFIX(                                                           \
        const T* __restrict__ r, const T* __restrict__ p_old, T* __restrict__ p_new, T* __restrict__ q,    \
        double* __restrict__ partial, const double* __restrict__ sc, int B,                                \
        int n0, int n1, int n2, int ndim, int b0, int b1, int b2,                                          \
        double inv0, double inv1, double inv2, int jacobi)                                                 \
    {                                                                                                      \
        cg_apply_impl<T>(r, p_old, p_new, q, partial, sc, B, n0, n1, n2, ndim, b0, b1, b2,                 \
                         inv0, inv1, inv2, jacobi);                                                        \
    }                                                                                                      \
    extern "C" __global__ void cg_update_##SUFFIX(                                                          \
        T* __restrict__ x, T* __restrict__ r, const T* __restrict__ p, const T* __restrict__ q,            \
        double* __restrict__ partial2, const double* __restrict__ sc, int B,                               \
        int n0, int n1, int n2, int ndim, int b0, int b1, int b2,                                          \
        double inv0, double inv1, double inv2, int jacobi)                                                 \
    {                                                                                                      \
        cg_update_impl<T>(x, r, p, q, partial2, sc, B, n0, n1, n2, ndim, b0, b1, b2,                       \
                          inv0, inv1, inv2, jacobi);                                                       \
    }

GPUDP_POISSON_KERNELS(f32, float)
GPUDP_POISSON_KERNELS(f64, double)

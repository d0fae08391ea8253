// Multigrid V-cycle kernels (gpudp/ops/multigrid.py): the level operator, damped Jacobi, restriction and
// prolongation, float32 and float64; one thread per output entry of a grid-stride loop, no atomics.
//
// The formulas are those of gpudp/backends/mg_stencils.py (the Numba backends compile its bodies), written
// out per cell in gather form. A level: n = (n0, n1, n2) cells per padded axis, boundary codes b0, b1, b2,
// off = 3 - ndim (axes a < off are padding and never touched), one *coupling* face array w_a per padded axis
// (n_a + 1 entries along a on a non-periodic axis, n_a on a periodic one; face f lies between cells f - e_a
// and f; padding axes: a never-read stand-in):
//
//     (A x)_i = sum_a  w_a[lower face of i] (x_i - x_{i-e_a}) + w_a[upper face of i] (x_i - x_{i+e_a})
//
// with x outside a non-periodic axis read as 0 (the axis terms are summed in the order 2, 1, 0).
// A batch is B systems of N = n0 n1 n2 contiguous cells; dinv (1/diag A, 0 where the diagonal is 0) and the
// couplings are shared by the systems.
//
//   mg_apply         out = A x
//   mg_residual      out = r - A x
//   mg_smooth        out = x + omega dinv (r - A x)
//   mg_smooth_first  out = omega dinv r             (the sweep from x = 0; x is not read)
//     (one signature for the four: x, r, out, w0, w1, w2, dinv, omega, B, n0, n1, n2, b0, b1, b2, off;
//      out must not overlap x or r)
//   mg_restrict      out = R f on the next coarser level (one thread per coarse entry)
//   mg_prolong_add   x += P e from the next coarser level, in place (one thread per fine entry, which it owns)
//
// Transfers act per padded axis a >= off with coarsen flag k_a = 1 (coarse n_c = ceil(n_f / 2); fine cells 2I
// and 2I + 1 lie in coarse cell I, a missing 2I + 1 of an odd axis is a phantom cell holding nothing); on an
// axis with k_a = 0 the coarse and fine index agree.
//   prolongation:  fine i gets 3/4 of its coarse cell I = i / 2 and 1/4 of the neighbour J = I - 1 (i even) or
//                  I + 1 (i odd); J outside the axis: periodic wraps, neumann clamps to I, dirichlet drops it;
//   restriction = P^T / 2 per coarsened axis: coarse I gathers fine 2I - 1, 2I, 2I + 1, 2I + 2 with weights
//                  1/8, 3/8, 3/8, 1/8; periodic indices wrap modulo 2 n_c, neumann reflects -1 to 0 and 2 n_c to
//                  2 n_c - 1, phantom and outside cells hold nothing.
#include "gpudp_common.cuh"

// Flat index of position p in an array of dims m (C order).
__device__ __forceinline__ gpudp_idx mg_flat(const gpudp_idx p[3], const gpudp_idx m[3])
{
    return (p[0] * m[1] + p[1]) * m[2] + p[2];
}

// Axis A's share of (A x)_i at the cell at position p (xs: the system's first cell; xi: its value there).
template <typename T, int A>
__device__ __forceinline__ T mg_axis_term(const T* __restrict__ xs, const T* __restrict__ w, const gpudp_idx p[3],
                                          const gpudp_idx n[3], int bc, T xi)
{
    const bool periodic = bc == GPUDP_BC_PERIODIC;
    gpudp_idx m[3] = {n[0], n[1], n[2]};   // dims of the face array
    if (!periodic) m[A] += 1;
    const gpudp_idx na = n[A], ia = p[A];
    gpudp_idx q[3] = {p[0], p[1], p[2]};
    const T wl = w[mg_flat(q, m)];
    gpudp_idx up = ia + 1;
    if (up == na && periodic) up = 0;
    q[A] = up;
    const T wu = w[mg_flat(q, m)];
    gpudp_idx lo = ia - 1;
    if (lo < 0 && periodic) lo = na - 1;
    T xl = T(0), xu = T(0);
    if (lo >= 0) { q[A] = lo; xl = xs[mg_flat(q, n)]; }
    if (up < na) { q[A] = up; xu = xs[mg_flat(q, n)]; }
    return wl * (xi - xl) + wu * (xi - xu);
}

#define MG_APPLY 0
#define MG_RESIDUAL 1
#define MG_SMOOTH 2
#define MG_SMOOTH_FIRST 3

template <typename T, int MODE>
__device__ __forceinline__ void mg_ops_impl(
    const T* __restrict__ x, const T* __restrict__ r, T* __restrict__ out, const T* __restrict__ w0,
    const T* __restrict__ w1, const T* __restrict__ w2, const T* __restrict__ dinv, T omega, int B,
    int n0, int n1, int n2, int b0, int b1, int b2, int off)
{
    const gpudp_idx n[3] = {n0, n1, n2};
    const gpudp_idx N = (gpudp_idx)n0 * n1 * n2;
    const gpudp_idx total = (gpudp_idx)B * N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx s, c;
        divmod(idx, N, s, c);
        if (MODE == MG_SMOOTH_FIRST) {
            out[idx] = omega * dinv[c] * r[idx];
            continue;
        }
        gpudp_idx p[3], t;
        divmod(c, n[2], t, p[2]);
        divmod(t, n[1], p[0], p[1]);
        const T* xs = x + s * N;
        const T xi = xs[c];
        T acc = mg_axis_term<T, 2>(xs, w2, p, n, b2, xi);
        if (off <= 1) acc += mg_axis_term<T, 1>(xs, w1, p, n, b1, xi);
        if (off <= 0) acc += mg_axis_term<T, 0>(xs, w0, p, n, b0, xi);
        if (MODE == MG_APPLY) out[idx] = acc;
        else if (MODE == MG_RESIDUAL) out[idx] = r[idx] - acc;
        else out[idx] = xi + omega * dinv[c] * (r[idx] - acc);
    }
}

// Fine index that restriction candidate j (in [2I - 1, 2I + 2]) of a coarsened axis reads, or -1.
__device__ __forceinline__ gpudp_idx mg_restrict_source(gpudp_idx j, gpudp_idx nf, gpudp_idx nc, int bc)
{
    if (bc == GPUDP_BC_PERIODIC) {
        if (j < 0) j += 2 * nc;
        else if (j >= 2 * nc) j -= 2 * nc;
    } else if (bc == GPUDP_BC_NEUMANN) {
        if (j < 0) j = 0;
        else if (j == 2 * nc) j = 2 * nc - 1;
    }
    return (j < 0 || j >= nf) ? -1 : j;
}

// Coarse index of prolongation candidate t (0: the parent, 1: the neighbour) of fine index i of a coarsened
// axis, or -1.
__device__ __forceinline__ gpudp_idx mg_prolong_source(gpudp_idx i, gpudp_idx nc, int bc, int t)
{
    const gpudp_idx I = i / 2;
    if (t == 0) return I;
    const gpudp_idx J = (i % 2 == 0) ? I - 1 : I + 1;
    if (J < 0 || J >= nc) {
        if (bc == GPUDP_BC_PERIODIC) return J < 0 ? J + nc : J - nc;
        if (bc == GPUDP_BC_NEUMANN) return I;
        return -1;
    }
    return J;
}

template <typename T>
__device__ __forceinline__ T mg_restrict_weight(int t) { return (t == 0 || t == 3) ? T(0.125) : T(0.375); }

template <typename T>
__device__ __forceinline__ void mg_restrict_impl(
    const T* __restrict__ f, T* __restrict__ out, int B, int nf0, int nf1, int nf2, int nc0, int nc1, int nc2,
    int b0, int b1, int b2, int k0, int k1, int k2, int off)
{
    const gpudp_idx nf[3] = {nf0, nf1, nf2}, nc[3] = {nc0, nc1, nc2};
    const int bc[3] = {b0, b1, b2};
    const int cnt[3] = {(off <= 0 && k0) ? 4 : 1, (off <= 1 && k1) ? 4 : 1, k2 ? 4 : 1};
    const gpudp_idx Nf = (gpudp_idx)nf0 * nf1 * nf2, Nc = (gpudp_idx)nc0 * nc1 * nc2;
    const gpudp_idx total = (gpudp_idx)B * Nc;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx s, c, t, X[3];
        divmod(idx, Nc, s, c);
        divmod(c, nc[2], t, X[2]);
        divmod(t, nc[1], X[0], X[1]);
        const T* fs = f + s * Nf;
        T acc = T(0);
        gpudp_idx j[3];
        for (int t0 = 0; t0 < cnt[0]; ++t0) {
            j[0] = X[0];
            T v0 = T(1);
            if (cnt[0] == 4) {
                j[0] = mg_restrict_source(2 * X[0] - 1 + t0, nf[0], nc[0], bc[0]);
                v0 = mg_restrict_weight<T>(t0);
            }
            if (j[0] < 0) continue;
            for (int t1 = 0; t1 < cnt[1]; ++t1) {
                j[1] = X[1];
                T v1 = v0;
                if (cnt[1] == 4) {
                    j[1] = mg_restrict_source(2 * X[1] - 1 + t1, nf[1], nc[1], bc[1]);
                    v1 = v0 * mg_restrict_weight<T>(t1);
                }
                if (j[1] < 0) continue;
                for (int t2 = 0; t2 < cnt[2]; ++t2) {
                    j[2] = X[2];
                    T v2 = v1;
                    if (cnt[2] == 4) {
                        j[2] = mg_restrict_source(2 * X[2] - 1 + t2, nf[2], nc[2], bc[2]);
                        v2 = v1 * mg_restrict_weight<T>(t2);
                    }
                    if (j[2] < 0) continue;
                    acc += v2 * fs[mg_flat(j, nf)];
                }
            }
        }
        out[idx] = acc;
    }
}

template <typename T>
__device__ __forceinline__ void mg_prolong_add_impl(
    const T* __restrict__ e, T* __restrict__ x, int B, int nf0, int nf1, int nf2, int nc0, int nc1, int nc2,
    int b0, int b1, int b2, int k0, int k1, int k2, int off)
{
    const gpudp_idx nf[3] = {nf0, nf1, nf2}, nc[3] = {nc0, nc1, nc2};
    const int bc[3] = {b0, b1, b2};
    const int cnt[3] = {(off <= 0 && k0) ? 2 : 1, (off <= 1 && k1) ? 2 : 1, k2 ? 2 : 1};
    const gpudp_idx Nf = (gpudp_idx)nf0 * nf1 * nf2, Nc = (gpudp_idx)nc0 * nc1 * nc2;
    const gpudp_idx total = (gpudp_idx)B * Nf;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx s, c, t, p[3];
        divmod(idx, Nf, s, c);
        divmod(c, nf[2], t, p[2]);
        divmod(t, nf[1], p[0], p[1]);
        const T* es = e + s * Nc;
        T acc = T(0);
        gpudp_idx J[3];
        for (int t0 = 0; t0 < cnt[0]; ++t0) {
            J[0] = p[0];
            T v0 = T(1);
            if (cnt[0] == 2) {
                J[0] = mg_prolong_source(p[0], nc[0], bc[0], t0);
                v0 = t0 == 0 ? T(0.75) : T(0.25);
            }
            if (J[0] < 0) continue;
            for (int t1 = 0; t1 < cnt[1]; ++t1) {
                J[1] = p[1];
                T v1 = v0;
                if (cnt[1] == 2) {
                    J[1] = mg_prolong_source(p[1], nc[1], bc[1], t1);
                    v1 = v0 * (t1 == 0 ? T(0.75) : T(0.25));
                }
                if (J[1] < 0) continue;
                for (int t2 = 0; t2 < cnt[2]; ++t2) {
                    J[2] = p[2];
                    T v2 = v1;
                    if (cnt[2] == 2) {
                        J[2] = mg_prolong_source(p[2], nc[2], bc[2], t2);
                        v2 = v1 * (t2 == 0 ? T(0.75) : T(0.25));
                    }
                    if (J[2] < 0) continue;
                    acc += v2 * es[mg_flat(J, nc)];
                }
            }
        }
        x[idx] += acc;
    }
}

#define MG_OPS_PARAMS(T)                                                                                       \
    const T* __restrict__ x, const T* __restrict__ r, T* __restrict__ out, const T* __restrict__ w0,           \
        const T* __restrict__ w1, const T* __restrict__ w2, const T* __restrict__ dinv, T omega, int B,        \
        int n0, int n1, int n2, int b0, int b1, int b2, int off
#define MG_OPS_ARGS x, r, out, w0, w1, w2, dinv, omega, B, n0, n1, n2, b0, b1, b2, off
#define MG_TRANSFER_PARAMS                                                                                     \
    int B, int nf0, int nf1, int nf2, int nc0, int nc1, int nc2, int b0, int b1, int b2, int k0, int k1,       \
        int k2, int off
#define MG_TRANSFER_ARGS B, nf0, nf1, nf2, nc0, nc1, nc2, b0, b1, b2, k0, k1, k2, off

#define GPUDP_MG_KERNELS(SUFFIX, T)                                                                            \
    extern "C" __global__ void mg_apply_##SUFFIX(MG_OPS_PARAMS(T))                                             \
    {                                                                                                          \
        mg_ops_impl<T, MG_APPLY>(MG_OPS_ARGS);                                                                 \
    }                                                                                                          \
    extern "C" __global__ void mg_residual_##SUFFIX(MG_OPS_PARAMS(T))                                          \
    {                                                                                                          \
        mg_ops_impl<T, MG_RESIDUAL>(MG_OPS_ARGS);                                                              \
    }                                                                                                          \
    extern "C" __global__ void mg_smooth_##SUFFIX(MG_OPS_PARAMS(T))                                            \
    {                                                                                                          \
        mg_ops_impl<T, MG_SMOOTH>(MG_OPS_ARGS);                                                                \
    }                                                                                                          \
    extern "C" __global__ void mg_smooth_first_##SUFFIX(MG_OPS_PARAMS(T))                                      \
    {                                                                                                          \
        mg_ops_impl<T, MG_SMOOTH_FIRST>(MG_OPS_ARGS);                                                          \
    }                                                                                                          \
    extern "C" __global__ void mg_restrict_##SUFFIX(const T* __restrict__ f, T* __restrict__ out,              \
                                                     MG_TRANSFER_PARAMS)                                       \
    {                                                                                                          \
        mg_restrict_impl<T>(f, out, MG_TRANSFER_ARGS);                                                         \
    }                                                                                                          \
    extern "C" __global__ void mg_prolong_add_##SUFFIX(const T* __restrict__ e, T* __restrict__ x,             \
                                                        MG_TRANSFER_PARAMS)                                    \
    {                                                                                                          \
        mg_prolong_add_impl<T>(e, x, MG_TRANSFER_ARGS);                                                        \
    }

GPUDP_MG_KERNELS(f32, float)
GPUDP_MG_KERNELS(f64, double)

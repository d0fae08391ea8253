// Shared device helpers of gpudp's CUDA C kernels: the padded grid geometry, ghost-value rules and a
// block-wide sum.
//
// Layout (gpudp/backends/base.py): a grid of 1-3 axes is padded with leading unit axes to three axes
// n0 x n1 x n2 (C order, axis 2 fastest); ``ndim`` real axes are the last ``ndim``; a field is N = n0*n1*n2
// contiguous cells, a batch of fields is contiguous fields. Boundary codes per padded axis:
// 0 periodic (wrap), 1 dirichlet (ghost 0), 2 neumann (ghost repeats the boundary cell).
//
// Sources must compile with nvcc and NVRTC alike: no host headers. The cupy backend's loader inlines this
// header into every .cu file that includes it, so NVRTC needs no include path.
#ifndef GPUDP_COMMON_CUH
#define GPUDP_COMMON_CUH

#define GPUDP_BC_PERIODIC 0
#define GPUDP_BC_DIRICHLET 1
#define GPUDP_BC_NEUMANN 2

// Threads per block of every launch (gpudp/backends/cupy_backend/_module.py BLOCK must match); a power of 2.
// Overridable only for the tests' CPU emulation of the kernels, which launches matching blocks.
#ifndef GPUDP_BLOCK
#define GPUDP_BLOCK 256
#endif

typedef long long gpudp_idx;

struct Geom {
    gpudp_idx n[3];   // cells per padded axis
    gpudp_idx s[3];   // strides (in cells) per padded axis
    int bc[3];        // boundary code per padded axis
    int first;        // first real axis: 3 - ndim
    gpudp_idx N;      // cells per field
};

__device__ __forceinline__ Geom make_geom(int n0, int n1, int n2, int ndim, int b0, int b1, int b2)
{
    Geom g;
    g.n[0] = n0; g.n[1] = n1; g.n[2] = n2;
    g.s[2] = 1; g.s[1] = n2; g.s[0] = (gpudp_idx)n1 * n2;
    g.bc[0] = b0; g.bc[1] = b1; g.bc[2] = b2;
    g.first = 3 - ndim;
    g.N = (gpudp_idx)n0 * n1 * n2;
    return g;
}

// q = a / b, r = a % b for 0 <= a, 0 < b; 32-bit division when both fit (GPUs emulate 64-bit division).
__device__ __forceinline__ void divmod(gpudp_idx a, gpudp_idx b, gpudp_idx& q, gpudp_idx& r)
{
    if ((((unsigned long long)a | (unsigned long long)b) >> 32) == 0) {
        const unsigned ua = (unsigned)a, ub = (unsigned)b;
        const unsigned uq = ua / ub;
        q = uq;
        r = ua - uq * ub;
    } else {
        q = a / b;
        r = a - q * b;
    }
}

// Position of ``cell`` (0 <= cell < N) along the three padded axes.
__device__ __forceinline__ void cell_coords(const Geom& g, gpudp_idx cell, gpudp_idx c[3])
{
    gpudp_idx r;
    divmod(cell, g.n[2], r, c[2]);
    divmod(r, g.n[1], c[0], c[1]);
}

// Cell one step up (+e_a) from ``cell`` at position ``i`` along axis ``a``; -1 outside a non-periodic domain.
__device__ __forceinline__ gpudp_idx up_index(const Geom& g, int a, gpudp_idx cell, gpudp_idx i)
{
    if (i + 1 < g.n[a]) return cell + g.s[a];
    if (g.bc[a] == GPUDP_BC_PERIODIC) return cell - (g.n[a] - 1) * g.s[a];
    return -1;
}

// Cell one step down (-e_a) from ``cell``; -1 outside a non-periodic domain.
__device__ __forceinline__ gpudp_idx down_index(const Geom& g, int a, gpudp_idx cell, gpudp_idx i)
{
    if (i > 0) return cell - g.s[a];
    if (g.bc[a] == GPUDP_BC_PERIODIC) return cell + (g.n[a] - 1) * g.s[a];
    return -1;
}

// Value of field ``f`` (starting at ``f[0]``) at neighbour ``j`` from up_index/down_index, with the ghost
// rule of boundary code ``bc`` when ``j`` lies outside: dirichlet 0, neumann ``centre``.
template <typename T>
__device__ __forceinline__ T ghosted(const T* f, gpudp_idx j, int bc, T centre)
{
    if (j >= 0) return f[j];
    return bc == GPUDP_BC_DIRICHLET ? T(0) : centre;
}

template <typename T>
__device__ __forceinline__ T neg_part(T w) { return w < T(0) ? w : T(0); }   // min(w, 0)

template <typename T>
__device__ __forceinline__ T pos_part(T w) { return w > T(0) ? w : T(0); }   // max(w, 0)

// First global thread index and grid stride of a 1-D grid-stride loop (64-bit).
__device__ __forceinline__ gpudp_idx thread_start() { return (gpudp_idx)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ gpudp_idx thread_stride() { return (gpudp_idx)gridDim.x * blockDim.x; }

// Sum of ``v`` over the block (blockDim.x must be GPUDP_BLOCK); every thread gets the sum. All threads of
// the block must call it; ``sh`` is a __shared__ array of GPUDP_BLOCK doubles, reusable after the call.
__device__ __forceinline__ double block_sum(double v, double* sh)
{
    const unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned half = GPUDP_BLOCK / 2; half > 0; half >>= 1) {
        if (t < half) sh[t] += sh[t + half];
        __syncthreads();
    }
    const double total = sh[0];
    __syncthreads();
    return total;
}

#endif  // GPUDP_COMMON_CUH

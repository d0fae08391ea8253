// MAC (staggered) advection and interpolation (DESIGN.md §6): forward kernels and their gather-form adjoints
// (one thread per output entry, no atomics), float32 and float64.
//
// Arrays (gpudp/backends/base.py): cell fields q, g: (Bu, F, N), F fields per velocity field; the face array
// of padded axis a, (Bu, M_a) for a velocity u_a and (Bu, F, M_a) for a staggered field U_a, is laid out like
// the grid with m_a = n_a + 1 entries along a on a non-periodic axis (faces 0 and n_a are boundary faces) and
// m_a = n_a on a periodic one; face j along a lies between cells j - 1 and j. Kernels take one pointer per
// padded axis (those of padding axes are never read). c_a = dt / dx_a.
//
// Donor cell: up(w, a, b) = w a if w > 0 else w b. Its derivatives take the w > 0 branch at w = 0 exactly:
// d/da = max(w, 0), d/db = min(w, 0), d/dw = (w >= 0 ? a : b).
//
// Cell-centred q, one step:
//     q'_i = q_i - sum_a c_a (F_a[i + e_a] - F_a[i]),   F_a[f] = up(u_a[f], q_{f-e_a}, q_f)
// with ghost cells outside a non-periodic axis (dirichlet 0, neumann repeats the boundary cell). Adjoint:
// the flux of face f receives gF_a[f] = c_a (g_f - g_{f-e_a}) (a ghost cell has no gradient), and
//     gq_j = g_j + sum_a [ gF_a[j] d/db F_a[j] + gF_a[j + e_a] d/da F_a[j + e_a] ]
// where a neumann ghost that repeats q_j adds the other role's derivative of that boundary face;
//     gu_a[f] += sum_fields gF_a[f] d/dw F_a[f].
//
// Staggered component U_a, one step (U_a of a face f not advected when a is non-periodic and f_a in {0, n_a}):
//     U_a'[f] = U_a[f] - c_a (G[f] - G[f - e_a]) - sum_{b != a} c_b (H_b[f + e_b] - H_b[f])
//     G[i]   = up(½(u_a[i] + u_a[i + e_a]), U_a[i], U_a[i + e_a])           at the cell i above face i
//     H_b[f] = up(½(u_b[f - e_a] + u_b[f]), U_a[f - e_b], U_a[f])           at the edge below face f along b
// with U_a ghosted along b by the rule of axis b. Adjoint (g' = g on advected faces, 0 on the others):
//     gG[i] = c_a (g'[i + e_a] - g'[i]),   gH_b[f] = c_b (g'[f] - g'[f - e_b]);
//     gU_a[j] = g_j + gG[j] d/da + gG[j - e_a] d/db + sum_b (gH_b[j] d/db + gH_b[j + e_b] d/da)  (ghost rules)
//     gu_k[f] = ½ sum_fields [ the gG·d/dw of the two G fluxes of U_k that average u_k[f]
//                              + the gH_k·d/dw of the two edges of every U_a (a != k) that average u_k[f] ].
//
// Interpolation (linear):  at_centers  c_a[i] = ½(u_a[i] + u_a[i + e_a]);  at_faces  f_a[f] = ½(c_{f-e_a} + c_f)
// with ghost cells at boundary faces; the *_adjoint kernels are their exact transposes.
//
// Kernels (suffix _f32 / _f64; threads: one per output entry of a grid-stride loop):
//   mac_cells_forward        one step src -> dst (Bu*F*N); optionally copies src into ``save``
//   mac_cells_adjoint_q      one transposed step for the q-gradient (Bu*F*N)
//   mac_cells_adjoint_u      adds one step's velocity gradient into gu (Bu * sum_a M_a; loops over F)
//   mac_faces_forward        one step of every component (Bu*F * sum_a M_a)
//   mac_faces_adjoint_q      its q-gradient (Bu*F * sum_a M_a)
//   mac_faces_adjoint_u      its velocity gradient (Bu * sum_a M_a; loops over F and the components)
//   mac_at_centers, mac_at_centers_adjoint, mac_at_faces, mac_at_faces_adjoint
// Kernels over faces of every axis number them component after component (``mac_face_axis``); the per-axis
// code is a template on the padded axis, instantiated once per axis by ``MAC_DISPATCH``.
#include "gpudp_common.cuh"

// Padded grid with the shapes of its face arrays.
struct MacGeom {
    Geom g;
    gpudp_idx m[3][3];    // m[a][k]: entries of the face array of axis a along axis k
    gpudp_idx fs[3][3];   // fs[a][k]: its stride along axis k
    gpudp_idx M[3];       // entries of the face array of axis a (one system)
    gpudp_idx Mtot;       // sum of M[a] over the real axes
};

__device__ __forceinline__ MacGeom make_mac_geom(int n0, int n1, int n2, int ndim, int b0, int b1, int b2)
{
    MacGeom mg;
    mg.g = make_geom(n0, n1, n2, ndim, b0, b1, b2);
    mg.Mtot = 0;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
#pragma unroll
        for (int k = 0; k < 3; ++k)
            mg.m[a][k] = mg.g.n[k] + ((k == a && mg.g.bc[a] != GPUDP_BC_PERIODIC) ? 1 : 0);
        mg.fs[a][2] = 1;
        mg.fs[a][1] = mg.m[a][2];
        mg.fs[a][0] = mg.m[a][1] * mg.m[a][2];
        mg.M[a] = mg.m[a][0] * mg.fs[a][0];
        if (a >= mg.g.first) mg.Mtot += mg.M[a];
    }
    return mg;
}

// The padded axis of entry ``r`` (0 <= r < Mtot) of the real axes' face arrays taken one after another;
// ``r`` becomes the entry's index in the face array of that axis.
__device__ __forceinline__ int mac_face_axis(const MacGeom& mg, gpudp_idx& r)
{
    int a = mg.g.first;
    if (a == 0 && r >= mg.M[0]) { r -= mg.M[0]; a = 1; }
    if (a == 1 && r >= mg.M[1]) { r -= mg.M[1]; a = 2; }
    return a;
}

// Runs the statement with the compile-time axis AX equal to the runtime axis ``a`` (the per-axis code is a
// template, so that every index into MacGeom is a constant and the struct stays in registers).
#define MAC_DISPATCH(a, ...)                                                                                   \
    do {                                                                                                       \
        if ((a) == 0) { constexpr int AX = 0; __VA_ARGS__; }                                                   \
        else if ((a) == 1) { constexpr int AX = 1; __VA_ARGS__; }                                              \
        else { constexpr int AX = 2; __VA_ARGS__; }                                                            \
    } while (0)

// Position of entry ``r`` of the face array of axis A along the three padded axes.
template <int A>
__device__ __forceinline__ void mac_face_coords(const MacGeom& mg, gpudp_idx r, gpudp_idx p[3])
{
    gpudp_idx t;
    divmod(r, mg.m[A][2], t, p[2]);
    divmod(t, mg.m[A][1], p[0], p[1]);
}

template <typename T>
__device__ __forceinline__ T mac_up(T w, T a, T b) { return w > T(0) ? w * a : w * b; }

template <typename T>
__device__ __forceinline__ T mac_up_dw(T w, T a, T b) { return w >= T(0) ? a : b; }

// Index of the entry one step down (-e) / up (+e) from ``idx`` along an axis on which the array holds ``n``
// entries, ``i`` being the position of ``idx`` and ``s`` the stride; wraps on a periodic axis, -1 outside
// a non-periodic one.
__device__ __forceinline__ gpudp_idx mac_step_down(gpudp_idx idx, gpudp_idx i, gpudp_idx n, gpudp_idx s, int bc)
{
    if (i > 0) return idx - s;
    if (bc == GPUDP_BC_PERIODIC) return idx + (n - 1) * s;
    return -1;
}

__device__ __forceinline__ gpudp_idx mac_step_up(gpudp_idx idx, gpudp_idx i, gpudp_idx n, gpudp_idx s, int bc)
{
    if (i + 1 < n) return idx + s;
    if (bc == GPUDP_BC_PERIODIC) return idx - (n - 1) * s;
    return -1;
}

// Gradient of a neighbour entry ``j`` from mac_step_down/mac_step_up: 0 for a ghost.
template <typename T>
__device__ __forceinline__ T mac_grad_at(const T* g, gpudp_idx j) { return j >= 0 ? g[j] : T(0); }

// The two cells beside face ``p`` of axis A (p[A] is a face index): ``lo`` = below, ``hi`` = above; -1 for a
// ghost outside a non-periodic axis.
template <int A>
__device__ __forceinline__ void mac_face_cells(const MacGeom& mg, const gpudp_idx p[3], gpudp_idx& lo, gpudp_idx& hi)
{
    const Geom& g = mg.g;
    gpudp_idx base = 0;
#pragma unroll
    for (int k = 0; k < 3; ++k)
        if (k != A) base += p[k] * g.s[k];
    const gpudp_idx n = g.n[A], s = g.s[A];
    hi = p[A] < n ? base + p[A] * s : -1;
    lo = p[A] > 0 ? base + (p[A] - 1) * s : (g.bc[A] == GPUDP_BC_PERIODIC ? base + (n - 1) * s : -1);
}

// Value of a cell field at ``j`` from mac_face_cells; a ghost takes the rule of ``bc``: dirichlet 0, neumann
// the boundary cell ``other`` (the face's other cell).
template <typename T>
__device__ __forceinline__ T mac_cell_value(const T* q, gpudp_idx j, gpudp_idx other, int bc)
{
    if (j >= 0) return q[j];
    return bc == GPUDP_BC_DIRICHLET ? T(0) : q[other];
}

// Linear index in the face array of axis ``a`` of the face at cell position ``pos`` (its lower face along a).
__device__ __forceinline__ gpudp_idx mac_lower_face(const MacGeom& mg, int a, const gpudp_idx pos[3])
{
    return pos[0] * mg.fs[a][0] + pos[1] * mg.fs[a][1] + pos[2] * mg.fs[a][2];
}

// Upper face along ``a`` of the cell at ``pos`` whose lower face is ``lf`` (the upper face of the last cell of
// a periodic axis is face 0).
__device__ __forceinline__ gpudp_idx mac_upper_face(const MacGeom& mg, int a, const gpudp_idx pos[3], gpudp_idx lf)
{
    return pos[a] + 1 < mg.m[a][a] ? lf + mg.fs[a][a] : lf - pos[a] * mg.fs[a][a];
}

// ---- cell-centred q ------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void mac_cells_forward_impl(
    const T* __restrict__ src, T* __restrict__ dst, T* __restrict__ save, int do_save,
    const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2, int Bu, int F,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T c0, T c1, T c2)
{
    const MacGeom mg = make_mac_geom(n0, n1, n2, ndim, b0, b1, b2);
    const Geom& g = mg.g;
    const T* uv[3] = {u0, u1, u2};
    const T c[3] = {c0, c1, c2};
    const gpudp_idx total = (gpudp_idx)Bu * F * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx field, cell, b, f;
        divmod(idx, g.N, field, cell);   // field = b * F + f
        divmod(field, F, b, f);
        const T* qf = src + field * g.N;
        gpudp_idx pos[3];
        cell_coords(g, cell, pos);
        const T v = qf[cell];
        if (do_save) save[idx] = v;
        T acc = T(0);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            const T* ua = uv[a] + b * mg.M[a];
            const gpudp_idx lf = mac_lower_face(mg, a, pos);
            const gpudp_idx uf = mac_upper_face(mg, a, pos, lf);
            const T lo = ghosted(qf, down_index(g, a, cell, pos[a]), g.bc[a], v);
            const T hi = ghosted(qf, up_index(g, a, cell, pos[a]), g.bc[a], v);
            acc += c[a] * (mac_up(ua[uf], v, hi) - mac_up(ua[lf], lo, v));
        }
        dst[idx] = v - acc;
    }
}

template <typename T>
__device__ __forceinline__ void mac_cells_adjoint_q_impl(
    const T* __restrict__ gin, T* __restrict__ gout,
    const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2, int Bu, int F,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T c0, T c1, T c2)
{
    const MacGeom mg = make_mac_geom(n0, n1, n2, ndim, b0, b1, b2);
    const Geom& g = mg.g;
    const T* uv[3] = {u0, u1, u2};
    const T c[3] = {c0, c1, c2};
    const gpudp_idx total = (gpudp_idx)Bu * F * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx field, cell, b, f;
        divmod(idx, g.N, field, cell);
        divmod(field, F, b, f);
        const T* gf = gin + field * g.N;
        gpudp_idx pos[3];
        cell_coords(g, cell, pos);
        const T gv = gf[cell];
        T s = gv;
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            const T* ua = uv[a] + b * mg.M[a];
            const gpudp_idx lf = mac_lower_face(mg, a, pos);
            const gpudp_idx uf = mac_upper_face(mg, a, pos, lf);
            const gpudp_idx L = down_index(g, a, cell, pos[a]);
            const gpudp_idx U = up_index(g, a, cell, pos[a]);
            const bool neumann = g.bc[a] == GPUDP_BC_NEUMANN;
            const T wl = ua[lf], wh = ua[uf];
            // q_j is the upwind-from-above value (b) of its lower face and the value below (a) of its upper
            // face; a neumann ghost repeating q_j gives it the face's other role too
            const T dl = (L < 0 && neumann) ? wl : neg_part(wl);
            const T dh = (U < 0 && neumann) ? wh : pos_part(wh);
            s += c[a] * ((gv - mac_grad_at(gf, L)) * dl + (mac_grad_at(gf, U) - gv) * dh);
        }
        gout[idx] = s;
    }
}

// Adds one step's velocity gradient to face r of axis A of velocity field b: q = the step's input state,
// gin = the gradient of its output.
template <typename T, int A>
__device__ __forceinline__ void mac_cells_adjoint_u_entry(const MacGeom& mg, const T* __restrict__ gin,
                                                          const T* __restrict__ q, const T* __restrict__ ua,
                                                          T* __restrict__ gua, T ca, gpudp_idx b, int F, gpudp_idx r)
{
    gpudp_idx p[3];
    mac_face_coords<A>(mg, r, p);
    gpudp_idx lo, hi;
    mac_face_cells<A>(mg, p, lo, hi);
    const gpudp_idx fo = b * mg.M[A] + r;
    const T w = ua[fo];
    const int bc = mg.g.bc[A];
    T acc = T(0);
    for (int f = 0; f < F; ++f) {
        const gpudp_idx off = (b * F + f) * mg.g.N;
        const T* qf = q + off;
        const T* gf = gin + off;
        const T gF = ca * (mac_grad_at(gf, hi) - mac_grad_at(gf, lo));
        acc += gF * mac_up_dw(w, mac_cell_value(qf, lo, hi, bc), mac_cell_value(qf, hi, lo, bc));
    }
    gua[fo] += acc;
}

template <typename T>
__device__ __forceinline__ void mac_cells_adjoint_u_impl(
    const T* __restrict__ gin, const T* __restrict__ q,
    const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2,
    T* __restrict__ gu0, T* __restrict__ gu1, T* __restrict__ gu2, int Bu, int F,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T c0, T c1, T c2)
{
    const MacGeom mg = make_mac_geom(n0, n1, n2, ndim, b0, b1, b2);
    const T* uv[3] = {u0, u1, u2};
    T* gu[3] = {gu0, gu1, gu2};
    const T c[3] = {c0, c1, c2};
    const gpudp_idx total = (gpudp_idx)Bu * mg.Mtot;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, r;
        divmod(idx, mg.Mtot, b, r);
        const int a = mac_face_axis(mg, r);
        MAC_DISPATCH(a, (mac_cells_adjoint_u_entry<T, AX>(mg, gin, q, uv[AX], gu[AX], c[AX], b, F, r)));
    }
}

// ---- staggered q ---------------------------------------------------------------------------------------

// The edge velocity ½(u_B[f - e_A] + u_B[f]) of component A's flux along B at A-face ``eA`` (an advected
// face: 0 <= eA < n_A, cell eA - 1 wrapping on a periodic A), B-face ``eB`` and position ``pC`` along the
// third axis C (A and B are constants once the callers' axis loops are unrolled).
template <typename T>
__device__ __forceinline__ T mac_edge_w(const MacGeom& mg, int A, int B, const T* __restrict__ uB, gpudp_idx eA,
                                        gpudp_idx eB, gpudp_idx pC)
{
    const int C = 3 - A - B;
    const gpudp_idx base = eB * mg.fs[B][B] + pC * mg.fs[B][C];
    const gpudp_idx lo = eA > 0 ? eA - 1 : mg.g.n[A] - 1;
    return T(0.5) * (uB[base + lo * mg.fs[B][A]] + uB[base + eA * mg.fs[B][A]]);
}

// Face f (position p) of component A is advected unless it is a boundary face of a non-periodic A.
template <int A>
__device__ __forceinline__ bool mac_advected(const MacGeom& mg, gpudp_idx pA)
{
    return mg.g.bc[A] == GPUDP_BC_PERIODIC || (pA > 0 && pA < mg.g.n[A]);
}

// Upper / lower neighbour of face f along A in component A (and u_A, laid out alike); face 0 follows the last
// face of a periodic A. Only called where the neighbour exists.
template <int A>
__device__ __forceinline__ gpudp_idx mac_next_face(const MacGeom& mg, gpudp_idx f, gpudp_idx pA)
{
    return pA + 1 < mg.m[A][A] ? f + mg.fs[A][A] : f - pA * mg.fs[A][A];
}

template <int A>
__device__ __forceinline__ gpudp_idx mac_prev_face(const MacGeom& mg, gpudp_idx f, gpudp_idx pA)
{
    return pA > 0 ? f - mg.fs[A][A] : f + (mg.m[A][A] - 1) * mg.fs[A][A];
}

// U_A'[f] of one field: U = its component A, uv = the velocity components of its velocity field.
template <typename T, int A>
__device__ __forceinline__ T mac_face_step(const MacGeom& mg, const T* __restrict__ U, const T* const uv[3],
                                           const T c[3], gpudp_idx f, const gpudp_idx p[3])
{
    const Geom& g = mg.g;
    const T v = U[f];
    if (!mac_advected<A>(mg, p[A])) return v;
    const T* uA = uv[A];
    const gpudp_idx fu = mac_next_face<A>(mg, f, p[A]);
    const gpudp_idx fd = mac_prev_face<A>(mg, f, p[A]);
    T acc = c[A] * (mac_up(T(0.5) * (uA[f] + uA[fu]), v, U[fu]) - mac_up(T(0.5) * (uA[fd] + uA[f]), U[fd], v));
#pragma unroll
    for (int B = 0; B < 3; ++B) {
        if (B == A || B < g.first) continue;
        const gpudp_idx s = mg.fs[A][B];
        const gpudp_idx jd = mac_step_down(f, p[B], g.n[B], s, g.bc[B]);
        const gpudp_idx ju = mac_step_up(f, p[B], g.n[B], s, g.bc[B]);
        const T vd = ghosted(U, jd, g.bc[B], v);
        const T vu = ghosted(U, ju, g.bc[B], v);
        const gpudp_idx pC = p[3 - A - B];
        const T wd = mac_edge_w(mg, A, B, uv[B], p[A], p[B], pC);
        const T wu = mac_edge_w(mg, A, B, uv[B], p[A], p[B] + 1 < mg.m[B][B] ? p[B] + 1 : 0, pC);
        acc += c[B] * (mac_up(wu, v, vu) - mac_up(wd, vd, v));
    }
    return v - acc;
}

// gU_A[f] of one field: G = the gradient of its component A after the step.
template <typename T, int A>
__device__ __forceinline__ T mac_face_adjoint_q(const MacGeom& mg, const T* __restrict__ G, const T* const uv[3],
                                                const T c[3], gpudp_idx f, const gpudp_idx p[3])
{
    const Geom& g = mg.g;
    const T gj = G[f];
    const bool advected = mac_advected<A>(mg, p[A]);
    const T gpj = advected ? gj : T(0);
    const T* uA = uv[A];
    T s = gj;
    if (g.bc[A] == GPUDP_BC_PERIODIC || p[A] < g.n[A]) {   // G of the cell above: U_A[f] is its value below
        const gpudp_idx fu = mac_next_face<A>(mg, f, p[A]);
        const T gpu = mac_advected<A>(mg, p[A] + 1 < mg.m[A][A] ? p[A] + 1 : 0) ? G[fu] : T(0);
        s += c[A] * (gpu - gpj) * pos_part(T(0.5) * (uA[f] + uA[fu]));
    }
    if (g.bc[A] == GPUDP_BC_PERIODIC || p[A] > 0) {        // G of the cell below: U_A[f] is its value above
        const gpudp_idx fd = mac_prev_face<A>(mg, f, p[A]);
        const T gpd = mac_advected<A>(mg, p[A] > 0 ? p[A] - 1 : mg.m[A][A] - 1) ? G[fd] : T(0);
        s += c[A] * (gpj - gpd) * neg_part(T(0.5) * (uA[fd] + uA[f]));
    }
    if (!advected) return s;   // the edge fluxes of a face that is not advected carry no gradient
#pragma unroll
    for (int B = 0; B < 3; ++B) {
        if (B == A || B < g.first) continue;
        const gpudp_idx st = mg.fs[A][B];
        const gpudp_idx jd = mac_step_down(f, p[B], g.n[B], st, g.bc[B]);
        const gpudp_idx ju = mac_step_up(f, p[B], g.n[B], st, g.bc[B]);
        const bool neumann = g.bc[B] == GPUDP_BC_NEUMANN;
        const gpudp_idx pC = p[3 - A - B];
        const T wd = mac_edge_w(mg, A, B, uv[B], p[A], p[B], pC);
        const T wu = mac_edge_w(mg, A, B, uv[B], p[A], p[B] + 1 < mg.m[B][B] ? p[B] + 1 : 0, pC);
        const T dd = (jd < 0 && neumann) ? wd : neg_part(wd);
        const T du = (ju < 0 && neumann) ? wu : pos_part(wu);
        s += c[B] * ((gj - mac_grad_at(G, jd)) * dd + (mac_grad_at(G, ju) - gj) * du);
    }
    return s;
}

// gu_K[f] summed over the F fields of velocity field ``b``: q, gin = the fields' components (one pointer per
// padded axis, at velocity field 0), uv = the velocity components of field b.
template <typename T, int K>
__device__ __forceinline__ T mac_face_adjoint_u(const MacGeom& mg, const T* const q[3], const T* const gin[3],
                                                const T* const uv[3], const T c[3], gpudp_idx b, int F,
                                                gpudp_idx f, const gpudp_idx p[3])
{
    const Geom& g = mg.g;
    const T* uK = uv[K];
    const bool periodicK = g.bc[K] == GPUDP_BC_PERIODIC;
    // the two G fluxes of component K that average u_K[f] (cells above and below face f)
    const bool above = periodicK || p[K] < g.n[K];
    const bool below = periodicK || p[K] > 0;
    const gpudp_idx fu = above ? mac_next_face<K>(mg, f, p[K]) : f;
    const gpudp_idx fd = below ? mac_prev_face<K>(mg, f, p[K]) : f;
    const bool adv_f = mac_advected<K>(mg, p[K]);
    const bool adv_u = above && mac_advected<K>(mg, p[K] + 1 < mg.m[K][K] ? p[K] + 1 : 0);
    const bool adv_d = below && mac_advected<K>(mg, p[K] > 0 ? p[K] - 1 : mg.m[K][K] - 1);
    const T wu = T(0.5) * (uK[f] + uK[fu]);
    const T wd = T(0.5) * (uK[fd] + uK[f]);
    T acc = T(0);
    for (int fld = 0; fld < F; ++fld) {
        const gpudp_idx fo = (b * F + fld) * mg.M[K];
        const T* UK = q[K] + fo;
        const T* GK = gin[K] + fo;
        const T gpj = adv_f ? GK[f] : T(0);
        if (above) acc += c[K] * ((adv_u ? GK[fu] : T(0)) - gpj) * mac_up_dw(wu, UK[f], UK[fu]);
        if (below) acc += c[K] * (gpj - (adv_d ? GK[fd] : T(0))) * mac_up_dw(wd, UK[fd], UK[f]);
    }
    // the edge fluxes along K of every other component A at the A-faces p[A] and p[A] + 1
#pragma unroll
    for (int A = 0; A < 3; ++A) {
        if (A == K || A < g.first) continue;
        const int C = 3 - A - K;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            gpudp_idx eA = p[A] + e;
            if (g.bc[A] == GPUDP_BC_PERIODIC) {
                if (eA == g.n[A]) eA = 0;
            } else if (eA == 0 || eA == g.n[A]) {
                continue;   // not advected: no gradient
            }
            // the faces of component A below (lo) and above (hi) the edge along K
            const gpudp_idx st = mg.fs[A][K];
            const gpudp_idx base = eA * mg.fs[A][A] + p[C] * mg.fs[A][C];
            const gpudp_idx hi = (periodicK || p[K] < g.n[K]) ? base + p[K] * st : -1;
            const gpudp_idx lo = p[K] > 0 ? base + (p[K] - 1) * st : (periodicK ? base + (g.n[K] - 1) * st : -1);
            const T w = mac_edge_w(mg, A, K, uK, eA, p[K], p[C]);
            for (int fld = 0; fld < F; ++fld) {
                const gpudp_idx fo = (b * F + fld) * mg.M[A];
                const T* UA = q[A] + fo;
                const T* GA = gin[A] + fo;
                const T gH = c[K] * (mac_grad_at(GA, hi) - mac_grad_at(GA, lo));
                acc += gH * mac_up_dw(w, mac_cell_value(UA, lo, hi, g.bc[K]), mac_cell_value(UA, hi, lo, g.bc[K]));
            }
        }
    }
    return T(0.5) * acc;
}

// The loop of the kernels over the faces of every component, PER fields per velocity field: one entry (face r
// of component AX of field ``field`` = b * PER + fld, b the velocity field) per iteration.
#define MAC_FACE_LOOP(PER, ...)                                                                                \
    const MacGeom mg = make_mac_geom(n0, n1, n2, ndim, b0, b1, b2);                                            \
    const T c[3] = {c0, c1, c2};                                                                               \
    const gpudp_idx total = (gpudp_idx)Bu * (PER) * mg.Mtot;                                                   \
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {                                \
        gpudp_idx field, r, b, fld;                                                                            \
        divmod(idx, mg.Mtot, field, r);                                                                        \
        divmod(field, (PER), b, fld);                                                                          \
        const int a = mac_face_axis(mg, r);                                                                    \
        const T* uv[3] = {u0 + b * mg.M[0], u1 + b * mg.M[1], u2 + b * mg.M[2]};                               \
        MAC_DISPATCH(a, __VA_ARGS__);                                                                          \
    }

template <typename T>
__device__ __forceinline__ void mac_faces_forward_impl(
    const T* __restrict__ q0, const T* __restrict__ q1, const T* __restrict__ q2,
    T* __restrict__ o0, T* __restrict__ o1, T* __restrict__ o2,
    const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2, int Bu, int F,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T c0, T c1, T c2)
{
    const T* q[3] = {q0, q1, q2};
    T* o[3] = {o0, o1, o2};
    MAC_FACE_LOOP(F, {
        gpudp_idx p[3];
        mac_face_coords<AX>(mg, r, p);
        const gpudp_idx fo = field * mg.M[AX];
        o[AX][fo + r] = mac_face_step<T, AX>(mg, q[AX] + fo, uv, c, r, p);
    })
}

template <typename T>
__device__ __forceinline__ void mac_faces_adjoint_q_impl(
    const T* __restrict__ g0, const T* __restrict__ g1, const T* __restrict__ g2,
    T* __restrict__ o0, T* __restrict__ o1, T* __restrict__ o2,
    const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2, int Bu, int F,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T c0, T c1, T c2)
{
    const T* gin[3] = {g0, g1, g2};
    T* o[3] = {o0, o1, o2};
    MAC_FACE_LOOP(F, {
        gpudp_idx p[3];
        mac_face_coords<AX>(mg, r, p);
        const gpudp_idx fo = field * mg.M[AX];
        o[AX][fo + r] = mac_face_adjoint_q<T, AX>(mg, gin[AX] + fo, uv, c, r, p);
    })
}

template <typename T>
__device__ __forceinline__ void mac_faces_adjoint_u_impl(
    const T* __restrict__ g0, const T* __restrict__ g1, const T* __restrict__ g2,
    const T* __restrict__ q0, const T* __restrict__ q1, const T* __restrict__ q2,
    const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2,
    T* __restrict__ o0, T* __restrict__ o1, T* __restrict__ o2, int Bu, int F,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2, T c0, T c1, T c2)
{
    const T* q[3] = {q0, q1, q2};
    const T* gin[3] = {g0, g1, g2};
    T* o[3] = {o0, o1, o2};
    MAC_FACE_LOOP(1, {
        gpudp_idx p[3];
        mac_face_coords<AX>(mg, r, p);
        o[AX][b * mg.M[AX] + r] = mac_face_adjoint_u<T, AX>(mg, q, gin, uv, c, b, F, r, p);
    })
}

// ---- interpolation -------------------------------------------------------------------------------------

// (B, M_a) faces -> (B, ndim, N) centres.
template <typename T>
__device__ __forceinline__ void mac_at_centers_impl(
    const T* __restrict__ u0, const T* __restrict__ u1, const T* __restrict__ u2, T* __restrict__ out, int B,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2)
{
    const MacGeom mg = make_mac_geom(n0, n1, n2, ndim, b0, b1, b2);
    const Geom& g = mg.g;
    const T* uv[3] = {u0, u1, u2};
    const gpudp_idx total = (gpudp_idx)B * ndim * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx row, cell, b, k;
        divmod(idx, g.N, row, cell);   // row = b * ndim + k
        divmod(row, ndim, b, k);
        gpudp_idx pos[3];
        cell_coords(g, cell, pos);
        MAC_DISPATCH(g.first + (int)k, {
            const T* ua = uv[AX] + b * mg.M[AX];
            const gpudp_idx lf = mac_lower_face(mg, AX, pos);
            out[idx] = T(0.5) * (ua[lf] + ua[mac_upper_face(mg, AX, pos, lf)]);
        });
    }
}

// The kernels from cells to the faces of every axis: face r of axis AX of system b per loop iteration, with
// its cells ``lo`` and ``hi`` (-1 for a ghost).
#define MAC_CELLS_TO_FACES_LOOP(...)                                                                           \
    const MacGeom mg = make_mac_geom(n0, n1, n2, ndim, b0, b1, b2);                                            \
    const Geom& g = mg.g;                                                                                      \
    T* o[3] = {o0, o1, o2};                                                                                    \
    const gpudp_idx total = (gpudp_idx)B * mg.Mtot;                                                            \
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {                                \
        gpudp_idx b, r;                                                                                        \
        divmod(idx, mg.Mtot, b, r);                                                                            \
        const int a = mac_face_axis(mg, r);                                                                    \
        MAC_DISPATCH(a, {                                                                                      \
            gpudp_idx p[3];                                                                                    \
            mac_face_coords<AX>(mg, r, p);                                                                     \
            gpudp_idx lo, hi;                                                                                  \
            mac_face_cells<AX>(mg, p, lo, hi);                                                                 \
            __VA_ARGS__;                                                                                       \
        });                                                                                                    \
    }

// (B, ndim, N) -> (B, M_a): gu_a[f] = ½ (g_a at the cells above and below face f that exist).
template <typename T>
__device__ __forceinline__ void mac_at_centers_adjoint_impl(
    const T* __restrict__ gc, T* __restrict__ o0, T* __restrict__ o1, T* __restrict__ o2, int B,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2)
{
    MAC_CELLS_TO_FACES_LOOP({
        const T* ga = gc + (b * ndim + (AX - g.first)) * g.N;
        o[AX][b * mg.M[AX] + r] = T(0.5) * (mac_grad_at(ga, lo) + mac_grad_at(ga, hi));
    })
}

// (B, N) -> (B, M_a): ½ (c below + c above) with ghost cells.
template <typename T>
__device__ __forceinline__ void mac_at_faces_impl(
    const T* __restrict__ cc, T* __restrict__ o0, T* __restrict__ o1, T* __restrict__ o2, int B,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2)
{
    MAC_CELLS_TO_FACES_LOOP({
        const T* cb = cc + b * g.N;
        o[AX][b * mg.M[AX] + r] =
            T(0.5) * (mac_cell_value(cb, lo, hi, g.bc[AX]) + mac_cell_value(cb, hi, lo, g.bc[AX]));
    })
}

// (B, M_a) -> (B, N): gc_i = sum_a ½ (g_a[lower face] + g_a[upper face]), plus ½ g_a of a neumann boundary
// face whose ghost repeats c_i.
template <typename T>
__device__ __forceinline__ void mac_at_faces_adjoint_impl(
    const T* __restrict__ g0, const T* __restrict__ g1, const T* __restrict__ g2, T* __restrict__ out, int B,
    int n0, int n1, int n2, int ndim, int b0, int b1, int b2)
{
    const MacGeom mg = make_mac_geom(n0, n1, n2, ndim, b0, b1, b2);
    const Geom& g = mg.g;
    const T* gv[3] = {g0, g1, g2};
    const gpudp_idx total = (gpudp_idx)B * g.N;
    for (gpudp_idx idx = thread_start(); idx < total; idx += thread_stride()) {
        gpudp_idx b, cell;
        divmod(idx, g.N, b, cell);
        gpudp_idx pos[3];
        cell_coords(g, cell, pos);
        T acc = T(0);
#pragma unroll
        for (int a = 0; a < 3; ++a) {
            if (a < g.first) continue;
            const T* ga = gv[a] + b * mg.M[a];
            const bool neumann = g.bc[a] == GPUDP_BC_NEUMANN;
            const gpudp_idx lf = mac_lower_face(mg, a, pos);
            const T wl = (neumann && pos[a] == 0) ? T(1) : T(0.5);
            const T wh = (neumann && pos[a] + 1 == g.n[a]) ? T(1) : T(0.5);
            acc += wl * ga[lf] + wh * ga[mac_upper_face(mg, a, pos, lf)];
        }
        out[idx] = acc;
    }
}

#define MAC_FACE_PTRS(T, x) const T* __restrict__ x##0, const T* __restrict__ x##1, const T* __restrict__ x##2
#define MAC_OUT_PTRS(T, x) T* __restrict__ x##0, T* __restrict__ x##1, T* __restrict__ x##2
#define MAC_GEOM_PARAMS int n0, int n1, int n2, int ndim, int b0, int b1, int b2
#define MAC_GEOM_ARGS n0, n1, n2, ndim, b0, b1, b2

#define GPUDP_MAC_KERNELS(SUFFIX, T)                                                                           \
    extern "C" __global__ void mac_cells_forward_##SUFFIX(                                                     \
        const T* __restrict__ src, T* __restrict__ dst, T* __restrict__ save, int do_save,                     \
        MAC_FACE_PTRS(T, u), int Bu, int F, MAC_GEOM_PARAMS, T c0, T c1, T c2)                                 \
    {                                                                                                          \
        mac_cells_forward_impl<T>(src, dst, save, do_save, u0, u1, u2, Bu, F, MAC_GEOM_ARGS, c0, c1, c2);      \
    }                                                                                                          \
    extern "C" __global__ void mac_cells_adjoint_q_##SUFFIX(                                                   \
        const T* __restrict__ gin, T* __restrict__ gout, MAC_FACE_PTRS(T, u), int Bu, int F,                   \
        MAC_GEOM_PARAMS, T c0, T c1, T c2)                                                                     \
    {                                                                                                          \
        mac_cells_adjoint_q_impl<T>(gin, gout, u0, u1, u2, Bu, F, MAC_GEOM_ARGS, c0, c1, c2);                  \
    }                                                                                                          \
    extern "C" __global__ void mac_cells_adjoint_u_##SUFFIX(                                                   \
        const T* __restrict__ gin, const T* __restrict__ q, MAC_FACE_PTRS(T, u), MAC_OUT_PTRS(T, gu),          \
        int Bu, int F, MAC_GEOM_PARAMS, T c0, T c1, T c2)                                                      \
    {                                                                                                          \
        mac_cells_adjoint_u_impl<T>(gin, q, u0, u1, u2, gu0, gu1, gu2, Bu, F, MAC_GEOM_ARGS, c0, c1, c2);      \
    }                                                                                                          \
    extern "C" __global__ void mac_faces_forward_##SUFFIX(                                                     \
        MAC_FACE_PTRS(T, q), MAC_OUT_PTRS(T, o), MAC_FACE_PTRS(T, u), int Bu, int F, MAC_GEOM_PARAMS,          \
        T c0, T c1, T c2)                                                                                      \
    {                                                                                                          \
        mac_faces_forward_impl<T>(q0, q1, q2, o0, o1, o2, u0, u1, u2, Bu, F, MAC_GEOM_ARGS, c0, c1, c2);       \
    }                                                                                                          \
    extern "C" __global__ void mac_faces_adjoint_q_##SUFFIX(                                                   \
        MAC_FACE_PTRS(T, g), MAC_OUT_PTRS(T, o), MAC_FACE_PTRS(T, u), int Bu, int F, MAC_GEOM_PARAMS,          \
        T c0, T c1, T c2)                                                                                      \
    {                                                                                                          \
        mac_faces_adjoint_q_impl<T>(g0, g1, g2, o0, o1, o2, u0, u1, u2, Bu, F, MAC_GEOM_ARGS, c0, c1, c2);     \
    }                                                                                                          \
    extern "C" __global__ void mac_faces_adjoint_u_##SUFFIX(                                                   \
        MAC_FACE_PTRS(T, g), MAC_FACE_PTRS(T, q), MAC_FACE_PTRS(T, u), MAC_OUT_PTRS(T, o), int Bu, int F,      \
        MAC_GEOM_PARAMS, T c0, T c1, T c2)                                                                     \
    {                                                                                                          \
        mac_faces_adjoint_u_impl<T>(g0, g1, g2, q0, q1, q2, u0, u1, u2, o0, o1, o2, Bu, F, MAC_GEOM_ARGS,      \
                                    c0, c1, c2);                                                               \
    }                                                                                                          \
    extern "C" __global__ void mac_at_centers_##SUFFIX(                                                        \
        MAC_FACE_PTRS(T, u), T* __restrict__ out, int B, MAC_GEOM_PARAMS)                                      \
    {                                                                                                          \
        mac_at_centers_impl<T>(u0, u1, u2, out, B, MAC_GEOM_ARGS);                                             \
    }                                                                                                          \
    extern "C" __global__ void mac_at_centers_adjoint_##SUFFIX(                                                \
        const T* __restrict__ g, MAC_OUT_PTRS(T, o), int B, MAC_GEOM_PARAMS)                                   \
    {                                                                                                          \
        mac_at_centers_adjoint_impl<T>(g, o0, o1, o2, B, MAC_GEOM_ARGS);                                       \
    }                                                                                                          \
    extern "C" __global__ void mac_at_faces_##SUFFIX(                                                          \
        const T* __restrict__ c, MAC_OUT_PTRS(T, o), int B, MAC_GEOM_PARAMS)                                   \
    {                                                                                                          \
        mac_at_faces_impl<T>(c, o0, o1, o2, B, MAC_GEOM_ARGS);                                                 \
    }                                                                                                          \
    extern "C" __global__ void mac_at_faces_adjoint_##SUFFIX(                                                  \
        MAC_FACE_PTRS(T, g), T* __restrict__ out, int B, MAC_GEOM_PARAMS)                                      \
    {                                                                                                          \
        mac_at_faces_adjoint_impl<T>(g0, g1, g2, out, B, MAC_GEOM_ARGS);                                       \
    }

GPUDP_MAC_KERNELS(f32, float)
GPUDP_MAC_KERNELS(f64, double)

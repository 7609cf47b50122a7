// The per-problem solver for V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2): a line-by-line port
// of the PyTorch reference (fastpid/solver.py), the same algorithm and certificate, for one
// problem at a time. It compiles both as plain C++ (the CPU solver runs one problem per
// thread) and as CUDA device code (one problem per GPU thread), so that both backends run
// the same operations in the same order. Hence: no heap, no exceptions, no standard
// library algorithms or containers, and every function FASTPID_HD; every array is carved
// out of one caller-provided buffer of solve_workspace_doubles() doubles.
//
// Notation as in the reference: potentials f[i][y], g[j][y]; admissible cells (i, j, y) have
// P(x1=i, y) > 0 and P(x2=j, y) > 0; s(i, j) = sum_y p(y) exp(f + g).
#pragma once

// <math.h>, not <cmath>: it also declares isfinite() in the global namespace, where the
// device versions of exp, log, ... live, so the unqualified names work on both sides.
#include <math.h>

#include <cstddef>
#include <cstdint>
#if defined(__AVX__) && !defined(__CUDA_ARCH__)
#include <immintrin.h>
#endif

#include "vector_math.hpp"  // also defines FASTPID_HD (host and device functions)

// `omp simd` before a loop: the CPU build may vectorise it (a reduction in any order).
// Left out where OpenMP is off and in device code, where it would be an unknown pragma.
#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define FASTPID_PRAGMA(text) _Pragma(#text)
#define FASTPID_SIMD(...) FASTPID_PRAGMA(omp simd __VA_ARGS__)
#else
#define FASTPID_SIMD(...)
#endif

namespace fastpid {

struct SolveOptions {
  double tol = 1e-8;       // certified gap to reach (nats)
  int max_iter = 500;      // Newton iterations
  int warm_steps = 10;     // Blahut-Arimoto steps before Newton (or the whole budget: fast)
  int polish_sweeps = 5;   // Sinkhorn sweeps in the primal bound (fastpid/solver.py, POLISH_SWEEPS)
  double mu_factor = 0.1;  // mu after each step: at most this times the mean R tau
  double omega = 1.5;      // over-relaxation of the Blahut-Arimoto steps
  bool newton = true;      // false: method "fast", alternation only
  // Newton directions by per-y blocks and a low-rank correction over the cells (few cells,
  // many target values) instead of the dense Schur complement on g; the workspace differs,
  // so solve_workspace_doubles() must be told the same.
  bool lowrank = false;
  // With the Schur complement: assemble it by a Gram product S -= G^T G over blocks of the
  // rows G_i = L_i^-1 C_i (gram_suits() says where the CPU solver does); the workspace
  // differs, so solve_workspace_doubles() must be told the same.
  bool gram = false;
  // With the Schur complement and without gram: factorise each f-block H_i, a diagonal plus
  // one rank-one term per x2, in product form (product_form_suits() says where the CPU solver
  // does) instead of by Cholesky; the workspace is the same.
  bool product_form = false;
  // A count of cancellations (a signal handler adds one): a solve stops at its next step,
  // with the bounds it has, once the count differs from cancel_from, its value when the solve
  // began (a count, not a flag that each solve clears: one thread's restart had cleared the
  // flag before the main thread's solve saw it). null where nothing can cancel (device code).
  const volatile int* cancel = nullptr;
  int cancel_from = 0;

  FASTPID_HD bool cancelled() const { return cancel != nullptr && *cancel != cancel_from; }
};

namespace detail {

constexpr double kNegInf = -HUGE_VAL;
constexpr double kMuMin = 1e-13;  // below this R = mu / (1 - s) loses its digits
// A primal-dual step goes this fraction of the way to where a slack would reach zero, and its
// multipliers' step likewise to where a multiplier would (fastpid/solver.py,
// FRACTION_TO_BOUNDARY). One shorter than kMinStep, or leading
// to a cell with log s above kMaxLogS, gives way to a barrier step (fastpid/solver.py,
// MIN_STEP, MAX_LOG_S, where the choice of 0.3 is measured); multipliers after a barrier
// step stay within [1/kKappa, kKappa] x mu / (1 - s).
constexpr double kFractionToBoundary = 0.99;
constexpr double kMinStep = 0.1;
constexpr double kMaxLogS = 0.3;
// After a barrier step shorter than kMuRaiseStep, mu rises kMuRaise-fold, never above the
// starting mu (fastpid/solver.py, MU_RAISE_STEP).
constexpr double kMuRaiseStep = 0.01;
constexpr double kMuRaise = 3.0;
// The slacks start at 1 - s cut towards mu / R, to no less than kSlackStartCut of 1 - s
// (fastpid/solver.py, SLACK_START_CUT).
constexpr double kSlackStartCut = 0.5;
// At mu's floor, a primal bound also from the multipliers with the cells below
// kSupportFactor times mu scaled by kSupportShrink (fastpid/solver.py, SUPPORT_FACTOR).
constexpr double kSupportFactor = 1e3;
constexpr double kSupportShrink = 1e-6;
constexpr double kKappa = 10.0;
// Before Newton, the alternation goes on kWarmBlock steps at a time, to kWarmMost in all, where
// it would reach tol by then (fastpid/solver.py, WARM_BLOCK, WARM_MOST).
constexpr int kWarmBlock = 5;
constexpr int kWarmMost = 30;
// The alternation's new end after the block of steps that ended at step `end`: kWarmBlock steps
// later where its stationarity e, above tol (below it, its rate is rounding's) and falling at
// the rate e / e_before of that block, would reach tol by kWarmMost steps; else `end`.
FASTPID_HD inline int warm_more(int end, double e, double e_before, double tol) {
  const double r = e / e_before;
  const bool more = e > tol && r > 0.0 && r < 1.0 && end + kWarmBlock <= kWarmMost &&
                    e * pow(r, (kWarmMost - end) / kWarmBlock) <= tol;
  return more ? end + kWarmBlock : end;
}
// Steps between the alternation's probes: kWarmBlock in an exact solve (newton) of more than
// kWarmBlock steps, where warm_more() may extend it; else 0 (no probes, `steps` steps).
FASTPID_HD inline int warm_block(bool newton, int steps) {
  return newton && steps > kWarmBlock ? kWarmBlock : 0;
}
// Before Newton, the alternation's own primal bound only where its stationarity e at its end
// is within kWarmBoundRange of tol (NaN, not probed: always): above that it does not certify,
// and Newton starts from the gap e / kStationarityPerGap instead of the bounds' (e was 1.3-14x
// that gap on 93 test and bench joints) (fastpid/solver.py, _warm_bound_due, _start_gap).
constexpr double kWarmBoundRange = 100.0;
constexpr double kStationarityPerGap = 10.0;
FASTPID_HD inline bool warm_bound_due(double e, double tol) { return !(e > kWarmBoundRange * tol); }
FASTPID_HD inline double start_gap(double e, double tol, double lower, double upper) {
  return warm_bound_due(e, tol) ? upper - lower : e / kStationarityPerGap;
}
// Sinkhorn sweeps (at least) behind a primal bound at mu's floor, once the iterate is near its
// centre or on its second step there (fastpid/solver.py, FLOOR_POLISH_SWEEPS).
constexpr int kFloorPolishSweeps = 100;
// Near its centre: Newton decrement dec2 at most kCentred mu (fastpid/solver.py, CENTRED).
constexpr double kCentred = 10.0;
FASTPID_HD inline bool centred(double dec2, double mu) { return dec2 <= kCentred * mu; }
// Low-rank Newton systems: more refinement steps where the relative residual is still above
// kRefineResidual (fastpid/solver.py, REFINE_RESIDUAL).
constexpr double kRefineResidual = 1e-6;
constexpr int kRefineMoreSteps = 8;
// See gauge_x2() (fastpid/solver.py, GAUGE_MASS_FRACTION).
constexpr double kGaugeMassFraction = 0.5;

// Whether an iterate gets a primal bound: one near its centre (dec2 <= kPrimalBoundCentring
// mu) once the barrier's gap mu * ncells is within kPrimalBoundRange of tol, or mu within 10x
// of its floor (fastpid/solver.py, _primal_bound_due, where the choice of 1 is measured).
constexpr double kPrimalBoundRange = 1.0;
constexpr double kPrimalBoundCentring = 1000.0;
// ... or near the optimum, dec2 <= kPrimalBoundDecrement tol (fastpid/solver.py,
// PRIMAL_BOUND_DECREMENT).
constexpr double kPrimalBoundDecrement = 100.0;
FASTPID_HD inline bool primal_bound_due(double dec2, double mu, double mu_floor, double ncells, double tol) {
  return (dec2 <= kPrimalBoundCentring * mu || dec2 <= kPrimalBoundDecrement * tol) && (mu * ncells <= kPrimalBoundRange * tol || mu <= 10.0 * mu_floor);
}

// The barrier step's backtracking: 1, 0.85, 0.7, 0.55, then halving.
FASTPID_HD inline double shorter_step(double alpha) { return alpha > 0.6 ? alpha - 0.15 : 0.5 * alpha; }

// The backtracking's first trial moves no potential by more than this many nats
// (fastpid/solver.py, MAX_POTENTIAL_STEP). Potentials of masses 1e-30 below the others have
// almost no curvature, and their Newton steps reached 1e30 to 1e67 nats: 60 trials from 1
// end near 1e-17 and so rejected every step (the solve stalled with gaps of 1.8e-7 to 9.2e-4).
// The 448 random, peaked and clustered test joints take the same steps with it as without.
constexpr double kMaxPotentialStep = 100.0;
FASTPID_HD inline double first_trial(double longest_move) {
  return longest_move > kMaxPotentialStep ? kMaxPotentialStep / longest_move : 1.0;
}

// std::max, std::min and std::swap are host-only in device code; these are the same
// (including which argument wins on ties and NaN).
template <class T>
FASTPID_HD inline T fp_max(T a, T b) { return a < b ? b : a; }
template <class T>
FASTPID_HD inline T fp_min(T a, T b) { return b < a ? b : a; }
template <class T>
FASTPID_HD inline void fp_swap(T& a, T& b) {
  T t = a;
  a = b;
  b = t;
}

// Step lengths to where a slack (tau) or a multiplier (R) would reach zero (HUGE_VAL: none).
struct StepLimits {
  double tau, R;
};

// Mehrotra's centring (fastpid/solver.py, _corrector_mu): the corrector aims at sigma times
// the iterate's mean complementarity `now`, sigma = ratio^3 within [kCentringMin, 1], where
// `ratio` is the mean complementarity the affine step reaches over `now`; never below mu's
// floor.
constexpr double kCentringMin = 0.01;

// A step at mu's floor that would count towards a stall is first extrapolated (Solver::
// extrapolate): the new point plus 2, 4, 8, ... times the Newton direction, up to
// kExtrapolateDoublings doublings, while the dual bound rises (fastpid/solver.py,
// EXTRAPOLATE_DOUBLINGS, says why).
constexpr int kExtrapolateDoublings = 20;
// At most kExtrapolateMost a solve, and none where mu's floor is kMuMin (EXTRAPOLATE_MOST).
constexpr int kExtrapolateMost = 20;
// How far inside the domain max s < 1 a barrier starts or restarts (DOMAIN_MARGIN).
constexpr double kDomainMargin = 1e-3;
FASTPID_HD inline double corrector_mu(double now, double ratio, double mu_floor) {
  const double sigma = fp_max(fp_min(ratio * ratio * ratio, 1.0), kCentringMin);
  return fp_max(sigma * now, mu_floor);
}

// The barrier parameter after a step (fastpid/solver.py, _next_mu): mu_factor times the mean
// complementarity R tau of the cells, never above mu nor below its floor.
FASTPID_HD inline double next_mu(double mu, double mean_complementarity, double mu_factor, double mu_floor) {
  return fp_max(fp_min(mu, mu_factor * mean_complementarity), mu_floor);
}

// The x2 whose g of target value y is fixed against the gauge (f_y + c, g_y - c): the first
// with at least kGaugeMassFraction of the largest P(x2, y) (fastpid/solver.py, _gauge_fixed:
// at an x2 of tiny mass the step that moves mass into it is lost to rounding).
FASTPID_HD inline int gauge_x2(const double* p2y, int n2, int ny, int y) {
  double top = 0.0;
  for (int j = 0; j < n2; ++j) top = fp_max(top, p2y[j * ny + y]);
  for (int j = 0; j < n2; ++j)
    if (p2y[j * ny + y] >= kGaugeMassFraction * top) return j;
  return 0;
}

FASTPID_HD inline void fill(double* x, size_t n, double v) {
  for (size_t k = 0; k < n; ++k) x[k] = v;
}
FASTPID_HD inline void copy(const double* __restrict__ from, size_t n, double* __restrict__ to) {
  for (size_t k = 0; k < n; ++k) to[k] = from[k];
}

// Sizes in 64 bits: the solver indexes its arrays with int, and the arena's count of a shape
// whose arrays outgrow that must say so (Arena::largest), not wrap around to a small number.
FASTPID_HD constexpr size_t wide(int v) { return static_cast<size_t>(v); }

// Hands out consecutive pieces of the workspace. With no buffer it only counts, which is
// how solve_workspace_doubles() sizes it: one layout code, so size and use cannot disagree.
// Each piece is rounded up to a multiple of `align` doubles (see kSolveAlign).
struct Arena {
  double* base = nullptr;
  size_t used = 0;  // doubles handed out so far
  size_t align = 1;
  size_t largest = 0;  // the largest piece, in doubles

  FASTPID_HD double* doubles(size_t n) {
    double* p = base ? base + used : nullptr;
    used += (n + align - 1) / align * align;
    if (n > largest) largest = n;
    return p;
  }
  // Masks are bytes, rounded up to whole doubles so that what follows stays aligned.
  FASTPID_HD char* bytes(size_t n) {
    if (n > largest) largest = n;  // masks are indexed by their bytes
    return reinterpret_cast<char*>(doubles((n + sizeof(double) - 1) / sizeof(double)));
  }
};

// The lower triangle (z <= y) of M += a b^T for a row-major n x n matrix M, as rank-one
// updates of its contiguous rows; rows whose a[y] is 0 (inadmissible pairs) are skipped.
// The Cholesky factorisation reads only the lower triangle of the symmetric matrices built so.
FASTPID_HD inline void add_outer_lower(double* M, const double* a, const double* b, int n) {
  for (int y = 0; y < n; ++y) {
    const double ay = a[y];
    if (ay == 0.0) continue;
    double* My = &M[y * n];
    FASTPID_SIMD()
    for (int z = 0; z <= y; ++z) My[z] += ay * b[z];
  }
}

// sum_outer_lower() by a register kernel K (K::rows<n>(), below) for n up to N; false (nothing
// done) above. The kernels of the instruction sets are separate types, so that translation
// units built for other ones never share a definition under one name.
template <class K, int N>
inline bool sum_outer_rows_upto(double* M, const double* a, const double* b, int count, size_t stride, int n) {
  if (n == N) {
    K::template rows<N>(M, a, b, count, stride);
    return true;
  }
  if constexpr (N > 1) return sum_outer_rows_upto<K, N - 1>(M, a, b, count, stride, n);
  return false;
}

#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
// The masks of the two 8-wide halves of a block of 16 columns of which m remain.
inline __mmask8 low_half_mask(int m) { return m >= 8 ? 0xff : (1u << m) - 1; }
inline __mmask8 high_half_mask(int m) { return m >= 16 ? 0xff : (m > 8 ? (1u << (m - 8)) - 1 : 0); }

// sum_outer_lower() for N = n rows of at most two vectors: M's rows in N (or 2N) registers
// over all m, one masked load of b_m and N broadcasts of a_m's entries per m, instead of a
// load and a store of each row of M per m (per solve 0.90-0.96x the time on 8x8x8 to
// clustered 40x40x6). The same sums in the same order as add_outer_lower()'s, so the same
// results; whole rows are stored (their upper part is not read).
struct OuterRows512 {
  template <int N>
  static void rows(double* M, const double* a, const double* b, int count, size_t stride) {
    constexpr int V = N <= 8 ? 1 : 2;  // vectors per row
    const __mmask8 lo = low_half_mask(N), hi = high_half_mask(N);
    __m512d acc[N][V];
    for (int y = 0; y < N; ++y)
      for (int v = 0; v < V; ++v) acc[y][v] = _mm512_setzero_pd();
    for (int m = 0; m < count; ++m) {
      const double *am = a + m * stride, *bm = b + m * stride;
      __m512d bv[V];
      bv[0] = _mm512_maskz_loadu_pd(lo, bm);
      if (V == 2) bv[V - 1] = _mm512_maskz_loadu_pd(hi, bm + 8);
      for (int y = 0; y < N; ++y) {
        const __m512d ay = _mm512_set1_pd(am[y]);
        for (int v = 0; v < V; ++v) acc[y][v] = _mm512_fmadd_pd(ay, bv[v], acc[y][v]);
      }
    }
    for (int y = 0; y < N; ++y) {
      _mm512_mask_storeu_pd(M + y * N, lo, acc[y][0]);
      if (V == 2) _mm512_mask_storeu_pd(M + y * N + 8, hi, acc[y][V - 1]);
    }
  }

  // rows<N>() over the entries idx[0 .. N - 1] of each a_m and b_m (N <= 8): b_m's by one
  // gather, a_m's broadcast from their places (see sum_outer_lower_at()).
  template <int N>
  static void rows_at(double* M, const double* a, const double* b, int count, size_t stride, const int* idx) {
    static_assert(N <= 8, "one vector per row");
    const __mmask8 lo = low_half_mask(N);
    const __m256i at = _mm256_maskz_loadu_epi32(lo, idx);
    __m512d acc[N];
    for (int y = 0; y < N; ++y) acc[y] = _mm512_setzero_pd();
    for (int m = 0; m < count; ++m) {
      const double *am = a + m * stride, *bm = b + m * stride;
      const __m512d bv = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), lo, at, bm, 8);
      for (int y = 0; y < N; ++y) acc[y] = _mm512_fmadd_pd(_mm512_set1_pd(am[idx[y]]), bv, acc[y]);
    }
    for (int y = 0; y < N; ++y) _mm512_mask_storeu_pd(M + y * N, lo, acc[y]);
  }
};

// rows_at<n>() for n up to N; false (nothing done) above.
template <int N>
inline bool sum_outer_rows_at_upto(double* M, const double* a, const double* b, int count, size_t stride,
                                   const int* idx, int n) {
  if (n == N) {
    OuterRows512::rows_at<N>(M, a, b, count, stride, idx);
    return true;
  }
  if constexpr (N > 1) return sum_outer_rows_at_upto<N - 1>(M, a, b, count, stride, idx, n);
  return false;
}

// Solver::combine_free() for ny <= 16: each run of free unknowns (at most 16 entries) by
// masked vectors, v[z] picked from v's two registers by a permute; the compiled loops had
// gathered v by pairs and left runs shorter than 8 (most of them on sparse joints) to a
// scalar remainder.
inline void combine_runs512(const double* x, const double* v, int ny, const int* gs, const int* fz,
                            const double* wc, const double* dc, int runs, double* out) {
  const __m512d v0 = _mm512_maskz_loadu_pd(low_half_mask(ny), v);
  const __m512d v1 = _mm512_maskz_loadu_pd(high_half_mask(ny), v + 8);
  for (int j = 0; j < runs; ++j) {
    const int l0 = gs[j], len = gs[j + 1] - l0;
    const __m512d xj = _mm512_set1_pd(x[j]);
    for (int o = 0; o < len; o += 8) {
      const int l = l0 + o;
      const __mmask8 m = low_half_mask(len - o);
      const __m512i z = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, fz + l));
      const __m512d vz = _mm512_permutex2var_pd(v0, z, v1);
      const __m512d t = _mm512_mul_pd(vz, _mm512_maskz_loadu_pd(m, dc + l));
      _mm512_mask_storeu_pd(out + l, m, _mm512_fmadd_pd(xj, _mm512_maskz_loadu_pd(m, wc + l), t));
    }
  }
}

// Solver::combine_free() for ny <= 16 and at most 32 runs: out[l] = x[j] wc[l] + v[z] dc[l]
// over the first `count` free unknowns l = (j, z) (fj, fz), eight at a time whatever their
// runs, x[j] and v[z] picked from registers by permutes: runs of ~4 unknowns (sparse joints)
// had each taken a masked vector of combine_runs512(). The same products in the same order.
inline void combine_flat512(const double* x, const double* v, int ny, int runs, const int* fj, const int* fz,
                            const double* wc, const double* dc, int count, double* out) {
  const __m512d v0 = _mm512_maskz_loadu_pd(low_half_mask(ny), v);
  const __m512d v1 = _mm512_maskz_loadu_pd(high_half_mask(ny), v + 8);
  const __m512d x0 = _mm512_maskz_loadu_pd(low_half_mask(runs), x);
  const __m512d x1 = _mm512_maskz_loadu_pd(high_half_mask(runs), x + 8);
  const bool upper = runs > 16;  // x[16 ..] in two more registers
  const __m512d x2 = _mm512_maskz_loadu_pd(upper ? low_half_mask(runs - 16) : 0, x + 16);
  const __m512d x3 = _mm512_maskz_loadu_pd(upper ? high_half_mask(runs - 16) : 0, x + 24);
  const __m512i sixteen = _mm512_set1_epi64(16);
  for (int l = 0; l < count; l += 8) {
    const __mmask8 m = low_half_mask(count - l);
    const __m512i j = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, fj + l));
    const __m512i z = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, fz + l));
    __m512d xj = _mm512_permutex2var_pd(x0, j, x1);
    if (upper) xj = _mm512_mask_mov_pd(xj, _mm512_cmpge_epi64_mask(j, sixteen), _mm512_permutex2var_pd(x2, j, x3));
    const __m512d t = _mm512_mul_pd(_mm512_permutex2var_pd(v0, z, v1), _mm512_maskz_loadu_pd(m, dc + l));
    _mm512_mask_storeu_pd(out + l, m, _mm512_fmadd_pd(xj, _mm512_maskz_loadu_pd(m, wc + l), t));
  }
}

// Solver::row_changes() for ny <= 16: each cell's two sums by masked vectors, then two
// horizontal sums (the compiled loop was a chain of scalar multiply-adds per cell).
inline void cell_changes512(const double* W, const double* dfi, const double* dg, int n2, int ny, double* ds,
                            double* curvature) {
  const __mmask8 lo = low_half_mask(ny), hi = high_half_mask(ny);
  const __m512d f0 = _mm512_maskz_loadu_pd(lo, dfi), f1 = _mm512_maskz_loadu_pd(hi, dfi + 8);
  for (int j = 0; j < n2; ++j) {
    const double *w = W + static_cast<size_t>(j) * ny, *gj = dg + static_cast<size_t>(j) * ny;
    const __m512d d0 = _mm512_add_pd(f0, _mm512_maskz_loadu_pd(lo, gj));
    __m512d s = _mm512_mul_pd(_mm512_maskz_loadu_pd(lo, w), d0);
    __m512d t = _mm512_mul_pd(s, d0);
    if (ny > 8) {
      const __m512d d1 = _mm512_add_pd(f1, _mm512_maskz_loadu_pd(hi, gj + 8));
      const __m512d s1 = _mm512_mul_pd(_mm512_maskz_loadu_pd(hi, w + 8), d1);
      s = _mm512_add_pd(s, s1);
      t = _mm512_fmadd_pd(s1, d1, t);
    }
    ds[j] = _mm512_reduce_add_pd(s);
    if (curvature) curvature[j] = 0.5 * _mm512_reduce_add_pd(t);
  }
}

// Solver::barrier_weights()' pass over the cells of x1 = i: each cell's W and Wt2 and its
// terms of the Jacobi sums by masked vectors, sixteen y at a time (the compiled loop took one
// vector and a scalar remainder with a branch per entry), i's sums kept in registers over the
// cells. a, a1: eF and p1y of i; eG, p2y: of x2 = 0 on (rows of ny); R, tau: of the cells
// (i, j); W, Wt2: cell (i, 0)'s first entry on; tf, df (of i): the sums, each adding its terms
// in the order of the cells (the sums over x1 follow in column_sums512()).
inline void cell_weights512(int n2, int ny, const double* a, const double* a1, const double* eG, const double* p2y,
                            const double* R, const double* tau, double* W, double* Wt2, double* tf, double* df) {
  const __m512d zero = _mm512_setzero_pd();
  for (int y0 = 0; y0 < ny; y0 += 16) {
    const __mmask8 lo = low_half_mask(ny - y0), hi = high_half_mask(ny - y0);
    const __m512d a0 = _mm512_maskz_loadu_pd(lo, a + y0), a8 = _mm512_maskz_loadu_pd(hi, a + y0 + 8);
    const __mmask8 m0 = _mm512_mask_cmp_pd_mask(lo, _mm512_maskz_loadu_pd(lo, a1 + y0), zero, _CMP_GT_OQ);
    const __mmask8 m8 = _mm512_mask_cmp_pd_mask(hi, _mm512_maskz_loadu_pd(hi, a1 + y0 + 8), zero, _CMP_GT_OQ);
    __m512d tf0 = _mm512_maskz_loadu_pd(lo, tf + y0), tf8 = _mm512_maskz_loadu_pd(hi, tf + y0 + 8);
    __m512d df0 = _mm512_maskz_loadu_pd(lo, df + y0), df8 = _mm512_maskz_loadu_pd(hi, df + y0 + 8);
    for (int j = 0; j < n2; ++j) {
      const __m512d t = _mm512_set1_pd(R[j]), t2 = _mm512_set1_pd(R[j] / tau[j]);
      // One half (eight y from k) of cell (i, j): lanes `lanes`, of which `mass` have P(x1=i, y) > 0.
      auto half = [&](size_t k, __mmask8 lanes, __mmask8 mass, __m512d av, __m512d& tfv, __m512d& dfv) {
        const __mmask8 adm = _mm512_mask_cmp_pd_mask(mass, _mm512_maskz_loadu_pd(lanes, p2y + k), zero, _CMP_GT_OQ);
        const __m512d w = _mm512_maskz_mul_pd(adm, av, _mm512_maskz_loadu_pd(lanes, eG + k));
        const __m512d v = _mm512_mul_pd(t2, w);
        _mm512_mask_storeu_pd(W + k, lanes, w);
        _mm512_mask_storeu_pd(Wt2 + k, lanes, v);
        tfv = _mm512_fmadd_pd(t, w, tfv);
        dfv = _mm512_fmadd_pd(v, w, dfv);
      };
      const size_t k = static_cast<size_t>(j) * ny + y0;
      half(k, lo, m0, a0, tf0, df0);
      if (hi) half(k + 8, hi, m8, a8, tf8, df8);
    }
    _mm512_mask_storeu_pd(tf + y0, lo, tf0);
    _mm512_mask_storeu_pd(tf + y0 + 8, hi, tf8);
    _mm512_mask_storeu_pd(df + y0, lo, df0);
    _mm512_mask_storeu_pd(df + y0 + 8, hi, df8);
  }
}

// Solver::barrier_weights()'s sums over x1 for every (x2, y): tg = sum_i R W, dg = sum_i Wt2 W,
// i in order, sixteen y at a time in registers (summed into memory cell by cell, each load had
// waited on the masked store of the row before: the CPU does not forward from masked stores).
inline void column_sums512(int n1, int n2, int ny, const double* R, const double* W, const double* Wt2, double* tg,
                           double* dg) {
  for (int j = 0; j < n2; ++j)
    for (int y0 = 0; y0 < ny; y0 += 16) {
      const __mmask8 lo = low_half_mask(ny - y0), hi = high_half_mask(ny - y0);
      __m512d t0 = _mm512_setzero_pd(), t8 = t0, d0 = t0, d8 = t0;
      for (int i = 0; i < n1; ++i) {
        const size_t c = static_cast<size_t>(i) * n2 + j, k = c * ny + y0;
        const __m512d t = _mm512_set1_pd(R[c]);
        const __m512d w0 = _mm512_maskz_loadu_pd(lo, W + k), w8 = _mm512_maskz_loadu_pd(hi, W + k + 8);
        t0 = _mm512_fmadd_pd(t, w0, t0);
        d0 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(lo, Wt2 + k), w0, d0);
        t8 = _mm512_fmadd_pd(t, w8, t8);
        d8 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(hi, Wt2 + k + 8), w8, d8);
      }
      const size_t q = static_cast<size_t>(j) * ny + y0;
      _mm512_mask_storeu_pd(tg + q, lo, t0);
      _mm512_mask_storeu_pd(tg + q + 8, hi, t8);
      _mm512_mask_storeu_pd(dg + q, lo, d0);
      _mm512_mask_storeu_pd(dg + q + 8, hi, d8);
    }
}

// Solver::steps_to_target()'s pass over the C cells, eight at a time (the compiled loop, with
// its two min reductions and a byte mask, was scalar: three divisions per cell in a chain).
// dtau holds ds on entry. Returns the two step limits as to_tau, to_r.
inline void step_limits512(int C, const char* cell, const double* rp, const double* soc, const double* corr,
                           const double* R, const double* tau, double mu, bool affine, double* dtau, double* dR,
                           double& to_tau, double& to_r) {
  const __m512d zero = _mm512_setzero_pd(), huge = _mm512_set1_pd(HUGE_VAL), vmu = _mm512_set1_pd(mu);
  __m512d lt = huge, lr = huge;
  for (int c = 0; c < C; c += 8) {
    const __mmask8 m = low_half_mask(C - c);
    __mmask8 has = 0;  // the cells with mass
    for (int t = 0; t < 8 && c + t < C; ++t) has |= static_cast<__mmask8>((cell[c + t] != 0) << t);
    const __m512d r = _mm512_maskz_loadu_pd(m, R + c);
    const __m512d ta = _mm512_mask_loadu_pd(_mm512_set1_pd(1.0), m, tau + c);  // 1 past the end: no 0 / 0
    __m512d dt = _mm512_sub_pd(_mm512_maskz_loadu_pd(m, rp + c), _mm512_maskz_loadu_pd(m, dtau + c));
    if (!affine) dt = _mm512_sub_pd(dt, _mm512_maskz_loadu_pd(m, soc + c));
    __m512d num = _mm512_add_pd(vmu, _mm512_maskz_loadu_pd(m, corr + c));
    num = _mm512_fnmadd_pd(r, dt, _mm512_fnmadd_pd(r, ta, num));
    const __m512d dr = _mm512_div_pd(num, ta);
    _mm512_mask_storeu_pd(dtau + c, m, dt);
    _mm512_mask_storeu_pd(dR + c, m, dr);
    const __mmask8 kt = has & _mm512_cmp_pd_mask(dt, zero, _CMP_LT_OQ);
    const __mmask8 kr = has & _mm512_cmp_pd_mask(dr, zero, _CMP_LT_OQ);
    lt = _mm512_min_pd(_mm512_mask_div_pd(huge, kt, _mm512_sub_pd(zero, ta), dt), lt);
    lr = _mm512_min_pd(_mm512_mask_div_pd(huge, kr, _mm512_sub_pd(zero, r), dr), lr);
  }
  to_tau = _mm512_reduce_min_pd(lt);
  to_r = _mm512_reduce_min_pd(lr);
}
#elif defined(__AVX2__) && defined(__FMA__) && !defined(__CUDA_ARCH__)
// sum_outer_lower() for N = n rows of at most three vectors (AVX2 has 16 registers, not 32):
// pass() keeps the rows R0 .. R1 - 1 of M up to column R1 - 1 (their lower triangle) in
// registers over all m, with its own loads of b_m; one pass per four rows (AMD EPYC: 0.2-0.33x
// the time of the row passes at n = 3 to 12 over 10 to 40 terms, 0.5-0.66x where 80% of the
// terms are 0; per solve 0.93-0.97x on 8x8x8, 12x12x6, clustered and digits 20x20x10). The
// same sums in the same order as add_outer_lower()'s, so the same results; whole rows up to
// column R1 - 1 are stored (their upper part is not read).
struct OuterRows4 {
  template <int N>
  static void rows(double* M, const double* a, const double* b, int count, size_t stride) {
    if constexpr (N <= 4) {
      pass<N, 0, N>(M, a, b, count, stride);
    } else if constexpr (N <= 8) {
      pass<N, 0, 4>(M, a, b, count, stride);
      pass<N, 4, N>(M, a, b, count, stride);
    } else {
      pass<N, 0, 4>(M, a, b, count, stride);
      pass<N, 4, 8>(M, a, b, count, stride);
      pass<N, 8, N>(M, a, b, count, stride);
    }
  }

  template <int N, int R0, int R1>
  static void pass(double* M, const double* a, const double* b, int count, size_t stride) {
    constexpr int NR = R1 - R0, V = (R1 + 3) / 4, tail = R1 - 4 * (V - 1);
    const __m256i tm = _mm256_setr_epi64x(-1, tail > 1 ? -1 : 0, tail > 2 ? -1 : 0, tail > 3 ? -1 : 0);
    __m256d acc[NR][V];
    for (int r = 0; r < NR; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_pd();
    for (int m = 0; m < count; ++m) {
      const double *am = a + m * stride, *bm = b + m * stride;
      __m256d bv[V];
      for (int v = 0; v < V - 1; ++v) bv[v] = _mm256_loadu_pd(bm + 4 * v);
      bv[V - 1] = _mm256_maskload_pd(bm + 4 * (V - 1), tm);
      for (int r = 0; r < NR; ++r) {
        const __m256d ay = _mm256_broadcast_sd(am + R0 + r);
        for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_pd(ay, bv[v], acc[r][v]);
      }
    }
    for (int r = 0; r < NR; ++r) {
      double* Mr = M + (R0 + r) * N;
      for (int v = 0; v < V - 1; ++v) _mm256_storeu_pd(Mr + 4 * v, acc[r][v]);
      _mm256_maskstore_pd(Mr + 4 * (V - 1), tm, acc[r][V - 1]);
    }
  }
};
#endif

// A row of n doubles padded to whole AVX-512 vectors (gram_rows()' substitution).
FASTPID_HD inline int padded_row(int n) { return (n + 7) / 8 * 8; }

// out[y] = sum over b < nb of w[b ws] rows[b rs + y] for y < ny, terms with w 0 skipped: the
// sums of the Sinkhorn half-steps (Problem::half_step), of log s and of the Newton gradient.
// Subtract: out[y] -= each term in turn instead, none skipped (the Cholesky panels, the Gram
// rows' forward substitution).
template <bool Subtract = false>
FASTPID_HD inline void weighted_rows(double* out, const double* w, size_t ws, const double* rows, size_t rs, int nb,
                                     int ny) {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
  // Sixteen columns at a time, their sums in two registers over all b (the row passes below
  // load and store out once per b, each load waiting on the last masked store). Each sum adds
  // the same terms in the same order as there.
  for (int y0 = 0; y0 < ny; y0 += 16) {
    const __mmask8 lo = low_half_mask(ny - y0), hi = high_half_mask(ny - y0);
    __m512d s0 = Subtract ? _mm512_maskz_loadu_pd(lo, out + y0) : _mm512_setzero_pd();
    __m512d s1 = Subtract && hi ? _mm512_maskz_loadu_pd(hi, out + y0 + 8) : _mm512_setzero_pd();
    for (int b = 0; b < nb; ++b) {
      const double r = w[b * ws];
      if (!Subtract && r == 0.0) continue;
      const __m512d rv = _mm512_set1_pd(r);
      const double* rb = rows + b * rs + y0;
      if (Subtract) {
        s0 = _mm512_fnmadd_pd(rv, _mm512_maskz_loadu_pd(lo, rb), s0);
        if (hi) s1 = _mm512_fnmadd_pd(rv, _mm512_maskz_loadu_pd(hi, rb + 8), s1);
      } else {
        s0 = _mm512_fmadd_pd(rv, _mm512_maskz_loadu_pd(lo, rb), s0);
        if (hi) s1 = _mm512_fmadd_pd(rv, _mm512_maskz_loadu_pd(hi, rb + 8), s1);
      }
    }
    _mm512_mask_storeu_pd(out + y0, lo, s0);
    if (hi) _mm512_mask_storeu_pd(out + y0 + 8, hi, s1);
  }
#else
  if (!Subtract) fill(out, ny, 0.0);
  for (int b = 0; b < nb; ++b) {
    const double r = w[b * ws];
    if (!Subtract && r == 0.0) continue;
    const double* rb = &rows[b * rs];
    FASTPID_SIMD()
    for (int y = 0; y < ny; ++y) out[y] += Subtract ? -(r * rb[y]) : r * rb[y];
  }
#endif
}

#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
// X_r = (X_r - sum over b < r of L[r][b] X_b) / L[r][r] for the rows r < n of X (stride ld, a
// multiple of 8: whole vectors, their padding included), L lower triangular n x n: the
// forward substitution of weighted_rows<true>() and a scaling, the same operations in the same
// order. Each row's vectors are loaded and stored whole, once: a load across a row's masked or
// scalar stores just made waits for them to reach the cache (~43 % of eliminate_f_block()'s
// samples on dense 30x3x10 joints had sat on three such loads).
inline void substitute_rows512(double* X, const double* L, int n, int ld) {
  for (int r = 0; r < n; ++r) {
    const double* Lr = L + static_cast<size_t>(r) * n;
    const __m512d inv = _mm512_set1_pd(1.0 / Lr[r]);
    double* Xr = X + static_cast<size_t>(r) * ld;
    for (int c = 0; c < ld; c += 16) {
      const bool two = c + 8 < ld;
      __m512d s0 = _mm512_loadu_pd(Xr + c);
      __m512d s1 = two ? _mm512_loadu_pd(Xr + c + 8) : _mm512_setzero_pd();
      for (int b = 0; b < r; ++b) {
        const __m512d rv = _mm512_set1_pd(Lr[b]);
        const double* Xb = X + static_cast<size_t>(b) * ld + c;
        s0 = _mm512_fnmadd_pd(rv, _mm512_loadu_pd(Xb), s0);
        if (two) s1 = _mm512_fnmadd_pd(rv, _mm512_loadu_pd(Xb + 8), s1);
      }
      _mm512_storeu_pd(Xr + c, _mm512_mul_pd(s0, inv));
      if (two) _mm512_storeu_pd(Xr + c + 8, _mm512_mul_pd(s1, inv));
    }
  }
}

// t[r] -= G_r . x for the rows r < rows of G (stride ld, zeros from k to the next multiple of
// 8), four rows at a time, each dot product's lanes summed in registers (the compiled
// reduction went through the stack, a chain of eight scalar additions per row).
inline void subtract_row_dots512(const double* G, int ld, int rows, const double* x, int k, double* t) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    const double* G0 = G + static_cast<size_t>(r) * ld;
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    for (int l = 0; l < k; l += 8) {
      const __m512d xv = _mm512_maskz_loadu_pd(low_half_mask(k - l), x + l);
      a0 = _mm512_fmadd_pd(_mm512_loadu_pd(G0 + l), xv, a0);
      a1 = _mm512_fmadd_pd(_mm512_loadu_pd(G0 + ld + l), xv, a1);
      a2 = _mm512_fmadd_pd(_mm512_loadu_pd(G0 + 2 * ld + l), xv, a2);
      a3 = _mm512_fmadd_pd(_mm512_loadu_pd(G0 + 3 * ld + l), xv, a3);
    }
    t[r] -= _mm512_reduce_add_pd(a0);
    t[r + 1] -= _mm512_reduce_add_pd(a1);
    t[r + 2] -= _mm512_reduce_add_pd(a2);
    t[r + 3] -= _mm512_reduce_add_pd(a3);
  }
  for (; r < rows; ++r) {
    const double* Gr = G + static_cast<size_t>(r) * ld;
    __m512d a = _mm512_setzero_pd();
    for (int l = 0; l < k; l += 8)
      a = _mm512_fmadd_pd(_mm512_loadu_pd(Gr + l), _mm512_maskz_loadu_pd(low_half_mask(k - l), x + l), a);
    t[r] -= _mm512_reduce_add_pd(a);
  }
}
#endif

// out[y] = sum over q < n of a[q as + y] b[q bs + y] for y < ny, the terms in the order of q:
// the low-rank elimination's products of D_y^-1 with a vector for every y at once. With
// AVX-512, sixteen columns at a time with their sums in registers over all q, as in
// weighted_rows().
FASTPID_HD inline void sum_products(double* out, const double* a, size_t as, const double* b, size_t bs, int n,
                                    int ny) {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
  for (int y0 = 0; y0 < ny; y0 += 16) {
    const __mmask8 lo = low_half_mask(ny - y0), hi = high_half_mask(ny - y0);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int q = 0; q < n; ++q) {
      const double *aq = a + q * as + y0, *bq = b + q * bs + y0;
      s0 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(lo, aq), _mm512_maskz_loadu_pd(lo, bq), s0);
      if (hi) s1 = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(hi, aq + 8), _mm512_maskz_loadu_pd(hi, bq + 8), s1);
    }
    _mm512_mask_storeu_pd(out + y0, lo, s0);
    if (hi) _mm512_mask_storeu_pd(out + y0 + 8, hi, s1);
  }
#else
  fill(out, ny, 0.0);
  for (int q = 0; q < n; ++q) {
    const double *aq = a + q * as, *bq = b + q * bs;
    FASTPID_SIMD()
    for (int y = 0; y < ny; ++y) out[y] += aq[y] * bq[y];
  }
#endif
}

// M (n x n, row-major; the lower triangle is what counts) = sum over m < count of a_m b_m^T,
// a_m = a + m stride and b_m = b + m stride: the f- and g-blocks of the Newton system.
FASTPID_HD inline void sum_outer_lower(double* M, const double* a, const double* b, int count, size_t stride, int n) {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
  if (sum_outer_rows_upto<OuterRows512, 12>(M, a, b, count, stride, n)) return;
#elif defined(__AVX2__) && defined(__FMA__) && !defined(__CUDA_ARCH__)
  if (sum_outer_rows_upto<OuterRows4, 12>(M, a, b, count, stride, n)) return;
#endif
  fill(M, static_cast<size_t>(n) * n, 0.0);
  for (int m = 0; m < count; ++m) add_outer_lower(M, a + m * stride, b + m * stride, n);
}

// Up to this many entries sum_outer_lower_at() has a register kernel (AVX-512: a gather per
// term); larger blocks are summed in full and their entries picked (both give the same sums).
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
constexpr int kOuterAtMost = 8;
#else
constexpr int kOuterAtMost = 0;
#endif

// M (n x n; the lower triangle) = the rows and columns idx[0 .. n - 1] of sum_outer_lower()'s
// sum of a_m b_m^T (n <= kOuterAtMost), by the same sums in the same order. The blocks of
// sparse joints have few free unknowns (digits 20x20x10: ~4 of 10 y per x1 or x2), and the
// full sum costs (10 / 4)^2 times their multiply-adds.
FASTPID_HD inline void sum_outer_lower_at(double* M, const double* a, const double* b, int count, size_t stride,
                                          const int* idx, int n) {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
  if (sum_outer_rows_at_upto<kOuterAtMost>(M, a, b, count, stride, idx, n)) return;
#endif
  fill(M, static_cast<size_t>(n) * n, 0.0);  // n = 0
}

// Rows of G_i = L_i^-1 C_i taken into S by one Gram product (gram_flush()): whole blocks i up
// to this many rows, so that the product's inner dimension is long while the rows it reads
// stay in cache.
constexpr int kGramRows = 128;
// The row stride of G is a multiple of kGramCols (and the blocked Cholesky's panels are padded
// by it) on every build, so that the layout never depends on the instruction set.
constexpr int kGramCols = 16;
// Gram tiles of kGramTileRows rows by kGramTileCols columns (a divisor of kGramCols), sized so
// that the tile's sums, a row of G's columns and a broadcast fit the 16 vector registers (AVX:
// 6 x 8, 12 of 4 doubles; SSE2: 6 x 4, 12 of 2) or 32 (AVX-512: 8 x 16, 16 of 8). With AVX2
// the AVX-512 tile kept its 32 registers of sums on the stack, a load and a store per
// multiply-add. Every tile shape adds the same products in the same order (same results).
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
constexpr int kGramTileCols = 16, kGramTileRows = 8;
#elif defined(__AVX__) && !defined(__CUDA_ARCH__)
constexpr int kGramTileCols = 8, kGramTileRows = 6;
#else
constexpr int kGramTileCols = 4, kGramTileRows = 6;
#endif
FASTPID_HD inline int gram_stride(int n) { return (n + kGramCols - 1) / kGramCols * kGramCols; }

// S[l][q] -= sum_r G[r][l] G[r][q] for the rows l0 .. l0 + RB - 1 and the TC columns from q0
// (stored up to the diagonal only; S's rows of stride lds), G: F rows of stride ld. The
// tile's sums stay in registers over all F rows (one row of loads and RB broadcasts per RB
// rows of vector multiply-adds; with AVX-512, tiles of 8 rows took 0.75-0.97x the time per
// solve of tiles of 4). TC is a template argument, not kGramTileCols read inside, so that
// the tiles of translation units built for other instruction sets (the CUDA sources' host
// pass) are other functions, never merged with these by the linker.
template <int RB, int TC>
FASTPID_HD inline void gram_tile(double* S, int lds, const double* G, int F, int ld, int l0, int q0) {
  double acc[RB][TC];
  for (int a = 0; a < RB; ++a)
    for (int c = 0; c < TC; ++c) acc[a][c] = 0.0;
  for (int r = 0; r < F; ++r) {
    const double* Gr = G + static_cast<size_t>(r) * ld;
    for (int a = 0; a < RB; ++a) {
      const double b = Gr[l0 + a];
      FASTPID_SIMD()
      for (int c = 0; c < TC; ++c) acc[a][c] += b * Gr[q0 + c];
    }
  }
  for (int a = 0; a < RB; ++a) {
    double* Sr = S + static_cast<size_t>(l0 + a) * lds + q0;
    const int stop = fp_min(TC, l0 + a - q0 + 1);
    for (int c = 0; c < stop; ++c) Sr[c] -= acc[a][c];
  }
}

// The lower triangle of S -= G^T G for S k x k (rows of stride lds) and G F x k (rows of
// stride ld, readable and finite up to column gram_stride(k)).
FASTPID_HD inline void gram_update(double* S, int lds, int k, const double* G, int F, int ld) {
  if (F == 0) return;
  int l0 = 0;
  for (; l0 + kGramTileRows <= k; l0 += kGramTileRows)
    for (int q0 = 0; q0 <= l0 + kGramTileRows - 1; q0 += kGramTileCols)
      gram_tile<kGramTileRows, kGramTileCols>(S, lds, G, F, ld, l0, q0);
  for (; l0 + 4 <= k; l0 += 4)
    for (int q0 = 0; q0 <= l0 + 3; q0 += kGramTileCols) gram_tile<4, kGramTileCols>(S, lds, G, F, ld, l0, q0);
  for (; l0 < k; ++l0)
    for (int q0 = 0; q0 <= l0; q0 += kGramTileCols) gram_tile<1, kGramTileCols>(S, lds, G, F, ld, l0, q0);
}

// Always inlined, like vlog: a call keeps the `omp simd` sums of x log x scalar.
FASTPID_HD FASTPID_ALWAYS_INLINE inline double xlogx(double x) { return x > 0 ? x * vlog(x) : 0.0; }

// Entries summed plainly in a block, beyond which the block sums are compensated (long_sum()).
constexpr size_t kSumBlock = 256;

// sum over k < n of x[k]: a vector sum of each block of kSumBlock entries (the whole row where
// n is at most that), the blocks' sums compensated. A row of 10^5 target values in one running
// sum came out 1.9e-12 short of its exact total, and the closed forms of constant sources took
// that for information (-t log t of a total t = 1 - 1.9e-12).
FASTPID_HD inline double long_sum(const double* x, size_t n) {
  CompensatedSum<double> total;
  for (size_t k0 = 0; k0 < n; k0 += kSumBlock) {
    const size_t end = n - k0 < kSumBlock ? n : k0 + kSumBlock;
    double s = 0.0;
    FASTPID_SIMD(reduction(+ : s))
    for (size_t k = k0; k < end; ++k) s += x[k];
    total.add(s);
  }
  return total.value();
}

// sum over k < n of a[k] b[k], in blocks as long_sum()'s.
FASTPID_HD inline double long_dot(const double* a, const double* b, size_t n) {
  CompensatedSum<double> total;
  for (size_t k0 = 0; k0 < n; k0 += kSumBlock) {
    const size_t end = n - k0 < kSumBlock ? n : k0 + kSumBlock;
    double s = 0.0;
    FASTPID_SIMD(reduction(+ : s))
    for (size_t k = k0; k < end; ++k) s += a[k] * b[k];
    total.add(s);
  }
  return total.value();
}

// weighted_rows() (out[c] = sum over b < nb of w[b ws] rows[b rs + c], c < n) in blocks of
// kSumBlock rows, each block's sums added to out compensated (Neumaier's sum, as
// CompensatedSum's, per column; part and err hold n doubles each). Only past one block: the
// cell sums of log s over 10^5 target values, summed in one pass, were 1.9e-12 off, and the
// dual bound of constant sources with them.
FASTPID_HD inline void long_weighted_rows(double* out, const double* w, size_t ws, const double* rows, size_t rs,
                                          int nb, int n, double* part, double* err) {
  if (static_cast<size_t>(nb) <= kSumBlock) {
    weighted_rows(out, w, ws, rows, rs, nb, n);
    return;
  }
  fill(out, static_cast<size_t>(n), 0.0);
  fill(err, static_cast<size_t>(n), 0.0);
  for (int b0 = 0; b0 < nb; b0 += static_cast<int>(kSumBlock)) {
    const int m = nb - b0 < static_cast<int>(kSumBlock) ? nb - b0 : static_cast<int>(kSumBlock);
    weighted_rows(part, w + b0 * ws, ws, rows + b0 * rs, rs, m, n);
    for (int c = 0; c < n; ++c) {
      const double a = out[c], b = part[c], t = a + b;
      err[c] += (a < 0 ? -a : a) >= (b < 0 ? -b : b) ? (a - t) + b : (b - t) + a;
      out[c] = t;
    }
  }
  for (int c = 0; c < n; ++c) out[c] += err[c];
}

// -sum over k < n of x[k] log x[k] (0 log 0 = 0). With AVX-512 the positive entries are
// packed, 8 at a time, into a buffer whose logs are taken in one vector loop whenever it
// fills: the zeros, most of a sparse joint's entries (digits 20x20x10: ~80 %), cost no log.
FASTPID_HD inline double neg_sum_xlogx(const double* x, size_t n) {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
  constexpr int kPacked = 256;
  alignas(64) double buf[kPacked + 8];
  CompensatedSum<double> total;  // over the packs' sums
  int m = 0;
  auto logs = [&] {
    double s = 0.0;
    FASTPID_SIMD(reduction(+ : s))
    for (int k = 0; k < m; ++k) s -= buf[k] * vlog(buf[k]);
    total.add(s);
    m = 0;
  };
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m512d v = _mm512_loadu_pd(x + k);
    const __mmask8 positive = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_GT_OQ);
    // The register form: compressing straight to memory is microcoded on AMD's Zen 4.
    _mm512_storeu_pd(buf + m, _mm512_maskz_compress_pd(positive, v));
    m += __builtin_popcount(positive);
    if (m > kPacked - 8) logs();
  }
  for (; k < n; ++k)
    if (x[k] > 0) buf[m++] = x[k];
  logs();
  return total.value();
#else
  // Vector sums over blocks of kBlock entries (short: a build without wide vectors sums each
  // block almost in sequence), compensated sums over the blocks.
  constexpr size_t kBlock = 16;
  CompensatedSum<double> total;
  for (size_t k0 = 0; k0 < n; k0 += kBlock) {
    const size_t end = n - k0 < kBlock ? n : k0 + kBlock;
    double s = 0.0;
    FASTPID_SIMD(reduction(+ : s))
    for (size_t k = k0; k < end; ++k) s -= xlogx(x[k]);
    total.add(s);
  }
  return total.value();
#endif
}

// log(sum_k exp(x(k))) over k < n; -inf when all are -inf.
template <class F>
FASTPID_HD inline double logsumexp(int n, F x) {
  double m = kNegInf;
  for (int k = 0; k < n; ++k) m = fp_max(m, x(k));
  if (m == kNegInf) return kNegInf;
  double s = 0.0;
  FASTPID_SIMD(reduction(+ : s))
  for (int k = 0; k < n; ++k) s += vexp(x(k) - m);
  return m + vlog(s);
}

// Columns per block of the blocked Cholesky factorisation, and the size from which it is used
// (one factorisation, Intel Xeon with AVX-512: blocked 0.6-0.9x the time of unblocked from 24
// unknowns, 1.1-1.5x below 20; blocks of 24 or 32 columns 1.0-1.35x the time of 16 up to 143).
constexpr int kCholeskyBlock = 16;
constexpr int kCholeskyBlockedFrom = 24;
// The low-rank elimination factorises and inverts the blocks D_y of this many target values
// side by side (Solver::lowrank_inverses): two AVX2 vectors, one AVX-512 vector.
constexpr int kLanes = 8;

// Row stride of the blocked factorisation's panel for an n x n matrix: the Gram tiles of the
// trailing update read up to kGramCols - 1 columns past the row's end (zeros).
FASTPID_HD inline int panel_stride(int n) { return n + kGramCols; }

// Scratch of cholesky() for matrices up to n x n.
struct CholeskyScratch {
  double* col;    // n: the column being eliminated
  double* panel;  // kCholeskyBlock rows of panel_stride(n): a block column of the factor, transposed

  FASTPID_HD CholeskyScratch(int n, Arena& arena)
      : col(arena.doubles(n)),
        panel(arena.doubles(n >= kCholeskyBlockedFrom ? static_cast<size_t>(kCholeskyBlock) * panel_stride(n) : 0)) {}
};

// In-place Cholesky of a dense SPD n x n matrix (lower triangle); false, with A partly
// overwritten, at a non-positive pivot. Right-looking: each column's rank-one update of
// the trailing rows is a contiguous axpy (it vectorises without horizontal reductions).
FASTPID_HD inline bool cholesky_attempt(double* A, int n, double* col) {
  for (int k = 0; k < n; ++k) {
    double* Ak = A + static_cast<size_t>(k) * n;
    if (!(Ak[k] > 0.0)) return false;
    const double d = sqrt(Ak[k]), inv = 1.0 / d;
    Ak[k] = d;
    for (int r = k + 1; r < n; ++r) col[r] = (A[static_cast<size_t>(r) * n + k] *= inv);
    for (int r = k + 1; r < n; ++r) {
      double* Ar = A + static_cast<size_t>(r) * n;
      const double lr = col[r];
      FASTPID_SIMD()
      for (int c = k + 1; c <= r; ++c) Ar[c] -= lr * col[c];
    }
  }
  return true;
}

// dst[c][r] = src[r][c] for a T x T tile (row strides lds, ldd), in registers: T = 8 with
// AVX-512, 4 with AVX (kTransposeTile). T is a template argument so that the two never share
// a name across translation units.
#if defined(__AVX__) && !defined(__CUDA_ARCH__)
template <int T>
inline void transpose_tile(const double* src, size_t lds, double* dst, size_t ldd);
#endif
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
constexpr int kTransposeTile = 8;
template <>
inline void transpose_tile<8>(const double* src, size_t lds, double* dst, size_t ldd) {
  __m512d r[8], t[8], s[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_pd(src + i * lds);
  for (int i = 0; i < 8; i += 2) {  // pairs of rows interleaved within 128-bit lanes
    t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4)  // then 128-bit lanes of row pairs (0,1) and (2,3)
    for (int o = 0; o < 2; ++o) {
      s[h + o] = _mm512_shuffle_f64x2(t[h + o], t[h + o + 2], 0x88);
      s[h + o + 2] = _mm512_shuffle_f64x2(t[h + o], t[h + o + 2], 0xDD);
    }
  // s[q]: columns q and q + 4 of rows 0-3 (s[q + 4]: of rows 4-7)
  for (int q = 0; q < 4; ++q) {
    _mm512_storeu_pd(dst + q * ldd, _mm512_shuffle_f64x2(s[q], s[q + 4], 0x88));
    _mm512_storeu_pd(dst + (q + 4) * ldd, _mm512_shuffle_f64x2(s[q], s[q + 4], 0xDD));
  }
}
#elif defined(__AVX__) && !defined(__CUDA_ARCH__)
constexpr int kTransposeTile = 4;
template <>
inline void transpose_tile<4>(const double* src, size_t lds, double* dst, size_t ldd) {
  __m256d r[4], t[4];
  for (int i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(src + i * lds);
  for (int i = 0; i < 4; i += 2) {  // pairs of rows interleaved within 128-bit lanes
    t[i] = _mm256_unpacklo_pd(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_pd(r[i], r[i + 1]);
  }
  for (int o = 0; o < 2; ++o) {  // then the lanes of rows (0, 1) and (2, 3)
    _mm256_storeu_pd(dst + o * ldd, _mm256_permute2f128_pd(t[o], t[o + 2], 0x20));
    _mm256_storeu_pd(dst + (o + 2) * ldd, _mm256_permute2f128_pd(t[o], t[o + 2], 0x31));
  }
}
#endif

// Pt[c][r] = A[r][kb + c] (into = true) or back, for the rows r in [r0, n) and the
// kCholeskyBlock columns c of a block (below its diagonal block, so all of them). With
// AVX-512 by 8 x 8 tiles in registers (one factorisation, one core: 0.77-0.88x the time at
// 24 to 143 unknowns, where the element-wise copies took about a third of it), with AVX by
// 4 x 4 tiles.
FASTPID_HD inline void transpose_panel(double* A, int n, double* Pt, int ld, int kb, int r0, bool into) {
  int r = r0;
#if defined(__AVX__) && !defined(__CUDA_ARCH__)
  static_assert(kCholeskyBlock % kTransposeTile == 0, "whole tiles");
  for (; r + kTransposeTile <= n; r += kTransposeTile)
    for (int c = 0; c < kCholeskyBlock; c += kTransposeTile) {
      double* a = A + static_cast<size_t>(r) * n + kb + c;
      double* p = Pt + static_cast<size_t>(c) * ld + r;
      if (into) transpose_tile<kTransposeTile>(a, n, p, ld);
      else transpose_tile<kTransposeTile>(p, ld, a, n);
    }
#endif
  for (; r < n; ++r)
    for (int c = 0; c < kCholeskyBlock; ++c) {
      double& a = A[static_cast<size_t>(r) * n + kb + c];
      double& p = Pt[static_cast<size_t>(c) * ld + r];
      if (into) p = a;
      else a = p;
    }
}

// cholesky_attempt() by blocks of kCholeskyBlock columns: factor the block column (the
// diagonal block and the rows below it) left-looking in its transpose Pt, where every step is
// an axpy over the rows, then update the trailing matrix with the whole block at once by the
// Gram product's register tiles (gram_update), which read the matrix once per block instead
// of once per column. Same result up to the order of the sums.
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
// Column k of cholesky_attempt_blocked()'s panel (row k - kb of Pt, stride ld >= n + 16):
// Pk[r] -= Pp[k] Pp[r] for the panel's earlier columns p in turn, then the pivot's square root
// and the entries below it scaled, over r >= k, the same operations in the same order as the
// row passes, sixteen rows at a time from the multiple of eight at or below k (entries above k
// stored back as they were). Every column's vectors thus start at the same offsets, so a later
// column's loads meet whole earlier stores, which the CPU forwards (from k itself they straddled
// two, and waited for them to reach the cache). False where the pivot is not positive.
inline bool panel_column512(double* Pt, int ld, int n, int kb, int k) {
  static_assert(kGramCols >= 16, "panel_stride() leaves the last sixteen-row step inside the row");
  double* Pk = Pt + static_cast<size_t>(k - kb) * ld;
  const int r0 = k & ~7;
  __m512d inv = _mm512_setzero_pd();
  for (int c0 = r0; c0 < n; c0 += 16) {
    const __m512d x0 = _mm512_loadu_pd(Pk + c0), x1 = _mm512_loadu_pd(Pk + c0 + 8);
    __m512d s0 = x0, s1 = x1;
    for (int p = 0; p < k - kb; ++p) {
      const double* Pp = Pt + static_cast<size_t>(p) * ld;
      const __m512d w = _mm512_set1_pd(Pp[k]);
      s0 = _mm512_fnmadd_pd(w, _mm512_loadu_pd(Pp + c0), s0);
      s1 = _mm512_fnmadd_pd(w, _mm512_loadu_pd(Pp + c0 + 8), s1);
    }
    if (c0 == r0) {  // the pivot is lane k - r0 of s0
      const double pivot = _mm512_cvtsd_f64(_mm512_permutexvar_pd(_mm512_set1_epi64(k - r0), s0));
      if (!(pivot > 0.0)) return false;
      const double d = sqrt(pivot);
      inv = _mm512_set1_pd(1.0 / d);
      const __mmask8 above = static_cast<__mmask8>((1u << (k - r0)) - 1), at = static_cast<__mmask8>(1u << (k - r0));
      s0 = _mm512_mask_mov_pd(_mm512_mask_mov_pd(_mm512_mul_pd(s0, inv), above, x0), at, _mm512_set1_pd(d));
      s1 = _mm512_mul_pd(s1, inv);
    } else {
      s0 = _mm512_mul_pd(s0, inv);
      s1 = _mm512_mul_pd(s1, inv);
    }
    _mm512_storeu_pd(Pk + c0, s0);
    _mm512_storeu_pd(Pk + c0 + 8, s1);
  }
  return true;
}
#endif

FASTPID_HD inline bool cholesky_attempt_blocked(double* A, int n, double* Pt) {
  const int ld = panel_stride(n);
  for (int p = 0; p < kCholeskyBlock; ++p) fill(Pt + static_cast<size_t>(p) * ld + n, ld - n, 0.0);
  for (int kb = 0; kb < n; kb += kCholeskyBlock) {
    const int ke = fp_min(kb + kCholeskyBlock, n);
    // Row k - kb of Pt holds column k of the lower triangle (rows r >= k).
    for (int r = kb; r < ke; ++r) {
      const double* Ar = A + static_cast<size_t>(r) * n;
      for (int k = kb; k <= r; ++k) Pt[static_cast<size_t>(k - kb) * ld + r] = Ar[k];
    }
    transpose_panel(A, n, Pt, ld, kb, ke, true);
    for (int k = kb; k < ke; ++k) {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
      if (!panel_column512(Pt, ld, n, kb, k)) return false;
#else
      double* Pk = Pt + static_cast<size_t>(k - kb) * ld;
      // Pk[r] -= Pp[k] Pp[r] for the panel's earlier columns p, in turn, over r >= k.
      weighted_rows<true>(Pk + k, Pt + k, ld, Pt + k, ld, k - kb, n - k);
      if (!(Pk[k] > 0.0)) return false;
      const double d = sqrt(Pk[k]), inv = 1.0 / d;
      Pk[k] = d;
      FASTPID_SIMD()
      for (int r = k + 1; r < n; ++r) Pk[r] *= inv;
#endif
    }
    for (int r = kb; r < ke; ++r) {
      double* Ar = A + static_cast<size_t>(r) * n;
      for (int k = kb; k <= r; ++k) Ar[k] = Pt[static_cast<size_t>(k - kb) * ld + r];
    }
    transpose_panel(A, n, Pt, ld, kb, ke, false);
    gram_update(A + static_cast<size_t>(ke) * n + ke, n, n - ke, Pt + ke, ke - kb, ld);
  }
  return true;
}

// One factorisation attempt: blocked from kCholeskyBlockedFrom unknowns on the host (the
// scratch has a panel whenever it was sized for that many or more); one GPU thread's
// matrices are small, and there the unblocked loop is the lighter code.
FASTPID_HD inline bool attempt(double* A, int n, const CholeskyScratch& scratch) {
#if !defined(__CUDA_ARCH__)
  if (n >= kCholeskyBlockedFrom) return cholesky_attempt_blocked(A, n, scratch.panel);
#endif
  return cholesky_attempt(A, n, scratch.col);
}

// Cholesky factor of the SPD matrix that build() writes into A (called here first). One that
// is singular to rounding (sparse problems leave directions the gauge fixing does not
// remove) is built again and factorised with a 1e-12 ridge instead, as the reference does:
// building it twice where that happens costs less than a copy of every matrix.
template <class Build>
FASTPID_HD inline void cholesky(double* A, int n, const CholeskyScratch& scratch, Build build) {
  build();
  if (attempt(A, n, scratch)) return;
  build();
  for (int k = 0; k < n; ++k) A[static_cast<size_t>(k) * n + k] += 1e-12;
  if (attempt(A, n, scratch)) return;
  // Still not positive: fall back to the identity, i.e. the Jacobi-scaled gradient as the
  // direction, and let the line search judge it.
  const size_t size = static_cast<size_t>(n) * n;
  for (size_t k = 0; k < size; ++k) A[k] = (k % (n + 1) == 0) ? 1.0 : 0.0;
}

// Solve L x = b in place (the forward sweep of cholesky_solve()), L from cholesky(), read by
// rows. Each sweep multiplies by the reciprocal of the pivot, which does not depend on the
// entries solved so far and so is computed off the sweep's chain of dependent operations (a
// division in it would add its latency to every row).
FASTPID_HD inline void cholesky_forward(const double* L, int n, double* b) {
  int r = 0;
  // Forward by four rows at a time: their four dot products with the entries solved so far
  // share one pass (independent sums, so no sum waits on another), then the 4 x 4 triangle.
  for (; r + 4 <= n; r += 4) {
    const double* L0 = L + static_cast<size_t>(r) * n;
    const double *L1 = L0 + n, *L2 = L1 + n, *L3 = L2 + n;
    const double i0 = 1.0 / L0[r], i1 = 1.0 / L1[r + 1], i2 = 1.0 / L2[r + 2], i3 = 1.0 / L3[r + 3];
    double v0 = b[r], v1 = b[r + 1], v2 = b[r + 2], v3 = b[r + 3];
    FASTPID_SIMD(reduction(- : v0, v1, v2, v3))
    for (int p = 0; p < r; ++p) {
      const double bp = b[p];
      v0 -= L0[p] * bp;
      v1 -= L1[p] * bp;
      v2 -= L2[p] * bp;
      v3 -= L3[p] * bp;
    }
    const double x0 = v0 * i0;
    const double x1 = (v1 - L1[r] * x0) * i1;
    const double x2 = (v2 - L2[r] * x0 - L2[r + 1] * x1) * i2;
    const double x3 = (v3 - L3[r] * x0 - L3[r + 1] * x1 - L3[r + 2] * x2) * i3;
    b[r] = x0;
    b[r + 1] = x1;
    b[r + 2] = x2;
    b[r + 3] = x3;
  }
  for (; r < n; ++r) {
    const double* Lr = L + static_cast<size_t>(r) * n;
    const double inv = 1.0 / Lr[r];
    double v = b[r];
    FASTPID_SIMD(reduction(- : v))
    for (int p = 0; p < r; ++p) v -= Lr[p] * b[p];
    b[r] = v * inv;
  }
}

// Solve L^T x = b in place (the backward sweep of cholesky_solve()), L read by rows.
FASTPID_HD inline void cholesky_backward(const double* L, int n, double* b) {
  // By four rows at a time: the 4 x 4 triangle, then one pass that subtracts the four rows'
  // terms from each entry above them (in the order of the rows one at a time, so the same
  // results, with a load and a store of b per four rows instead of per row).
  int r = n - 1;
  for (; r >= 3; r -= 4) {
    const double* L3 = L + static_cast<size_t>(r) * n;
    const double *L2 = L3 - n, *L1 = L2 - n, *L0 = L1 - n;
    const double x3 = b[r] * (1.0 / L3[r]);
    const double x2 = (b[r - 1] - L3[r - 1] * x3) * (1.0 / L2[r - 1]);
    const double x1 = ((b[r - 2] - L3[r - 2] * x3) - L2[r - 2] * x2) * (1.0 / L1[r - 2]);
    const double x0 = (((b[r - 3] - L3[r - 3] * x3) - L2[r - 3] * x2) - L1[r - 3] * x1) * (1.0 / L0[r - 3]);
    b[r] = x3;
    b[r - 1] = x2;
    b[r - 2] = x1;
    b[r - 3] = x0;
    FASTPID_SIMD()
    for (int p = 0; p < r - 3; ++p) b[p] = (((b[p] - L3[p] * x3) - L2[p] * x2) - L1[p] * x1) - L0[p] * x0;
  }
  for (; r >= 0; --r) {
    const double* Lr = L + static_cast<size_t>(r) * n;
    b[r] *= 1.0 / Lr[r];
    const double br = b[r];
    FASTPID_SIMD()
    for (int p = 0; p < r; ++p) b[p] -= Lr[p] * br;
  }
}

// Solve L L^T x = b in place, L from cholesky().
FASTPID_HD inline void cholesky_solve(const double* L, int n, double* b) {
  cholesky_forward(L, n, b);
  cholesky_backward(L, n, b);
}

// Solve L L^T X = B in place for k right-hand sides at once, L from cholesky(); B is n x k,
// row r holding entry r of every right-hand side, so that each step is a contiguous axpy
// over the right-hand sides (at small n, much faster than k calls of cholesky_solve()).
// The forward solve pushes each finished row r into the rows below it: every row still
// subtracts its terms r = 0, 1, ... in turn (the same results as pulling them in), but
// the axpys of one r go to different rows, where pulling chained them all through one row
// (a store, a load and a multiply-add's latency each).
FASTPID_HD inline void cholesky_solve_many(const double* L, int n, double* B, int k) {
  // Both sweeps by four rows at a time: the rows' own triangle, then one pass that subtracts
  // their four terms from each row beyond them, in the order of the rows one at a time (the
  // same results, with one load and store of each such row per four rows instead of per row).
  int r = 0;
  for (; r + 4 <= n; r += 4) {
    double* R0 = B + static_cast<size_t>(r) * k;
    double *R1 = R0 + k, *R2 = R1 + k, *R3 = R2 + k;
    const double* L1 = L + static_cast<size_t>(r + 1) * n;
    const double *L2 = L1 + n, *L3 = L2 + n;
    const double i0 = 1.0 / L[static_cast<size_t>(r) * n + r], i1 = 1.0 / L1[r + 1];
    const double i2 = 1.0 / L2[r + 2], i3 = 1.0 / L3[r + 3];
    FASTPID_SIMD()
    for (int c = 0; c < k; ++c) {
      const double x0 = R0[c] * i0;
      const double x1 = (R1[c] - L1[r] * x0) * i1;
      const double x2 = ((R2[c] - L2[r] * x0) - L2[r + 1] * x1) * i2;
      const double x3 = (((R3[c] - L3[r] * x0) - L3[r + 1] * x1) - L3[r + 2] * x2) * i3;
      R0[c] = x0;
      R1[c] = x1;
      R2[c] = x2;
      R3[c] = x3;
    }
    for (int s = r + 4; s < n; ++s) {
      const double* Ls = L + static_cast<size_t>(s) * n + r;
      const double l0 = Ls[0], l1 = Ls[1], l2 = Ls[2], l3 = Ls[3];
      double* Bs = B + static_cast<size_t>(s) * k;
      FASTPID_SIMD()
      for (int c = 0; c < k; ++c) Bs[c] = (((Bs[c] - l0 * R0[c]) - l1 * R1[c]) - l2 * R2[c]) - l3 * R3[c];
    }
  }
  for (; r < n; ++r) {
    double* Br = B + static_cast<size_t>(r) * k;
    const double inv = 1.0 / L[static_cast<size_t>(r) * n + r];
    FASTPID_SIMD()
    for (int c = 0; c < k; ++c) Br[c] *= inv;
    for (int s = r + 1; s < n; ++s) {
      const double ls = L[static_cast<size_t>(s) * n + r];
      double* Bs = B + static_cast<size_t>(s) * k;
      FASTPID_SIMD()
      for (int c = 0; c < k; ++c) Bs[c] -= ls * Br[c];
    }
  }
  r = n - 1;
  for (; r >= 3; r -= 4) {
    const double* L3 = L + static_cast<size_t>(r) * n;
    const double *L2 = L3 - n, *L1 = L2 - n, *L0 = L1 - n;
    double* R3 = B + static_cast<size_t>(r) * k;
    double *R2 = R3 - k, *R1 = R2 - k, *R0 = R1 - k;
    const double i3 = 1.0 / L3[r], i2 = 1.0 / L2[r - 1], i1 = 1.0 / L1[r - 2], i0 = 1.0 / L0[r - 3];
    FASTPID_SIMD()
    for (int c = 0; c < k; ++c) {
      const double x3 = R3[c] * i3;
      const double x2 = (R2[c] - L3[r - 1] * x3) * i2;
      const double x1 = ((R1[c] - L3[r - 2] * x3) - L2[r - 2] * x2) * i1;
      const double x0 = (((R0[c] - L3[r - 3] * x3) - L2[r - 3] * x2) - L1[r - 3] * x1) * i0;
      R3[c] = x3;
      R2[c] = x2;
      R1[c] = x1;
      R0[c] = x0;
    }
    for (int p = 0; p < r - 3; ++p) {
      const double l3 = L3[p], l2 = L2[p], l1 = L1[p], l0 = L0[p];
      double* Bp = B + static_cast<size_t>(p) * k;
      FASTPID_SIMD()
      for (int c = 0; c < k; ++c) Bp[c] = (((Bp[c] - l3 * R3[c]) - l2 * R2[c]) - l1 * R1[c]) - l0 * R0[c];
    }
  }
  for (; r >= 0; --r) {
    const double* Lr = L + static_cast<size_t>(r) * n;
    double* Br = B + static_cast<size_t>(r) * k;
    const double inv = 1.0 / Lr[r];
    FASTPID_SIMD()
    for (int c = 0; c < k; ++c) Br[c] *= inv;
    for (int p = 0; p < r; ++p) {
      const double lp = Lr[p];
      double* Bp = B + static_cast<size_t>(p) * k;
      FASTPID_SIMD()
      for (int c = 0; c < k; ++c) Bp[c] -= lp * Br[c];
    }
  }
}

// The data of one problem (marginals, masks) and the operations on potentials that only
// depend on it. Constructing it only lays out its arrays; load() fills them.
struct Problem {
  const int n1, n2, ny;
  const double* P = nullptr;
  double *p1y, *p2y, *py, *logpy, *la, *lb;
  double* logpy_rows;  // logpy repeated for each x1 (n1 x ny): factors() in one flat loop
  char *m1, *m2, *cell;
  int ncells = 0;
  // Scratch of the methods below; nothing in them outlives a call.
  double *F, *G, *eF, *eG, *eGt, *shift, *lin, *ein, *sums, *cell_sum, *rows, *cols, *d1, *d2, *total, *qy;

  FASTPID_HD Problem(int n1, int n2, int ny, Arena& arena)
      : n1(n1), n2(n2), ny(ny), p1y(arena.doubles(wide(n1) * ny)), p2y(arena.doubles(wide(n2) * ny)),
        py(arena.doubles(ny)), logpy(arena.doubles(ny)), la(arena.doubles(wide(n1) * ny)),
        lb(arena.doubles(wide(n2) * ny)), logpy_rows(arena.doubles(wide(n1) * ny)), m1(arena.bytes(wide(n1) * ny)),
        m2(arena.bytes(wide(n2) * ny)),
        cell(arena.bytes(wide(n1) * n2)), F(arena.doubles(wide(n1) * ny)), G(arena.doubles(wide(n2) * ny)),
        eF(arena.doubles(wide(n1) * ny)), eG(arena.doubles(wide(n2) * ny)), eGt(arena.doubles(wide(n2) * ny)),
        shift(arena.doubles(ny)),
        lin(arena.doubles(wide(n1 > n2 ? n1 : n2) * ny)), ein(arena.doubles(wide(n1 > n2 ? n1 : n2) * ny)),
        sums(arena.doubles(wide(n1 > n2 ? n1 : n2) * ny)), cell_sum(arena.doubles(wide(n1) * n2)),
        rows(arena.doubles(wide(n1) * ny)), cols(arena.doubles(wide(n2) * ny)), d1(arena.doubles(wide(n1) * ny)),
        d2(arena.doubles(wide(n2) * ny)), total(arena.doubles(ny)), qy(arena.doubles(ny)) {}

  // P[n1][n2][ny], normalised, C order; it must stay alive while the problem is used.
  FASTPID_HD void load(const double* P_) {
    P = P_;
    fill(p1y, n1 * ny, 0.0);
    fill(p2y, n2 * ny, 0.0);
    fill(py, ny, 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        const double* p = &P[(i * n2 + j) * ny];
        double *a = &p1y[i * ny], *b = &p2y[j * ny];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          a[y] += p[y];
          b[y] += p[y];
        }
      }
    for (int i = 0; i < n1; ++i)
      for (int y = 0; y < ny; ++y) py[y] += p1y[i * ny + y];
    for (int y = 0; y < ny; ++y) logpy[y] = py[y] > 0 ? vlog(py[y]) : 0.0;
    for (int i = 0; i < n1; ++i) copy(logpy, ny, &logpy_rows[i * ny]);
    for (int k = 0; k < n1 * ny; ++k) {
      m1[k] = p1y[k] > 0;
      la[k] = m1[k] ? vlog(p1y[k]) - logpy[k % ny] : kNegInf;
    }
    for (int k = 0; k < n2 * ny; ++k) {
      m2[k] = p2y[k] > 0;
      lb[k] = m2[k] ? vlog(p2y[k]) - logpy[k % ny] : kNegInf;
    }
    ncells = 0;
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        bool any = false;
        for (int y = 0; y < ny && !any; ++y) any = adm(i, j, y);
        cell[i * n2 + j] = any;
        ncells += any;
      }
  }

  FASTPID_HD bool adm(int i, int j, int y) const { return m1[i * ny + y] && m2[j * ny + y]; }

  // log(p(y) exp(f + g)) of an admissible cell.
  FASTPID_HD double logw(const double* f, const double* g, int i, int j, int y) const {
    return logpy[y] + f[i * ny + y] + g[j * ny + y];
  }

  // The factors of p(y) exp(f + g) = eF[i][y] eG[j][y] on admissible cells (0 elsewhere):
  // eF = exp(log p(y) + f - c_y) and eG = exp(g + c_y) with c_y = max_i (log p(y) + f[i][y]),
  // so that eF <= 1, and eG <= 1 wherever max s < 1. Cell sums then cost one product each
  // instead of one exp per term. Also leaves F = log p(y) + f and G = g, -inf where masked.
  FASTPID_HD void factors(const double* f, const double* g) const {
    FASTPID_SIMD()
    for (int k = 0; k < n1 * ny; ++k) F[k] = m1[k] ? logpy_rows[k] + f[k] : kNegInf;
    for (int k = 0; k < n2 * ny; ++k) G[k] = m2[k] ? g[k] : kNegInf;
    max_per_y(F, n1);
    shifted_exp(F, n1, -1.0, eF);
    shifted_exp(G, n2, 1.0, eG);
  }

  // out[r][y] = exp(x[r][y] + sign shift[y]) over `rows` rows: the exponents row by row, then
  // their exps in one vector loop over all rows (loops of ny exps per row left the last ny mod
  // 8 of each row to scalar calls).
  FASTPID_HD void shifted_exp(const double* x, int rows, double sign, double* out) const {
    for (int r = 0; r < rows; ++r) {
      const double* xr = &x[r * ny];
      double* o = &out[r * ny];
      FASTPID_SIMD()
      for (int y = 0; y < ny; ++y) o[y] = xr[y] + sign * shift[y];
    }
    FASTPID_SIMD()
    for (int k = 0; k < rows * ny; ++k) out[k] = vexp(out[k]);
  }

  // shift[y] = max over the `rows` rows of x[row][y] (0 where all are -inf).
  FASTPID_HD void max_per_y(const double* x, int rows) const {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    // Eight y at a time, their maxima in a register over all rows (the row loop stored shift
    // and loaded it back at once, ny mod 8 of it by scalar stores). max_pd(x, m) is
    // fp_max(m, x) for every input, NaN included (x > m ? x : m).
    for (int y0 = 0; y0 < ny; y0 += 8) {
      const __mmask8 mask = low_half_mask(ny - y0);
      __m512d m = _mm512_set1_pd(kNegInf);
      for (int r = 0; r < rows; ++r) m = _mm512_max_pd(_mm512_maskz_loadu_pd(mask, x + r * ny + y0), m);
      _mm512_mask_storeu_pd(shift + y0, mask, m);
    }
#else
    fill(shift, ny, kNegInf);
    for (int r = 0; r < rows; ++r) {
      const double* xr = &x[r * ny];
      FASTPID_SIMD()
      for (int y = 0; y < ny; ++y) shift[y] = fp_max(shift[y], xr[y]);
    }
#endif
    for (int y = 0; y < ny; ++y)
      if (shift[y] == kNegInf) shift[y] = 0.0;
  }

  // Whether a sum of products may have lost digits to under- or overflow (or be NaN from
  // 0 * inf); such sums are redone in the log domain.
  FASTPID_HD static bool doubtful(double sum) { return !(sum > 1e-280 && sum < 1e280); }

  // log s(i, j) for every cell (-inf where no y is admissible), from factors(): the sums,
  // their logs in one vector loop, then the doubtful ones again in the log domain.
  FASTPID_HD void log_s(const double* f, const double* g, double* out) const {
    factors(f, g);
    // Per x1, the sums of all its cells at once: eF's row times eG transposed (ny x n2), by
    // weighted_rows(), not a dot product per cell reduced across vector lanes (0.95-1.00x the
    // time per solve).
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) eGt[y * n2 + j] = eG[j * ny + y];
    // (sums, free here: only half_step() uses it, within one call, holds part and err.)
    for (int i = 0; i < n1; ++i)
      long_weighted_rows(&cell_sum[i * n2], &eF[i * ny], 1, eGt, n2, ny, n2, sums, sums + n2);
    FASTPID_SIMD()
    for (int c = 0; c < n1 * n2; ++c) out[c] = vlog(cell_sum[c]);
    // Mostly there is nothing to redo: the sums that are 0 are the cells' without mass (whose
    // sums are 0 or NaN), as many, and no other is doubtful. One vector pass counts both (the
    // compiler's own: under `omp simd` it gathered the sums and kept the counts on the stack).
    int zeros = 0, others = 0;
    for (int c = 0; c < n1 * n2; ++c) {
      zeros += cell_sum[c] == 0.0;
      others += doubtful(cell_sum[c]) && cell_sum[c] != 0.0;
    }
    if (zeros == n1 * n2 - ncells && others == 0) return;
    for (int c = 0; c < n1 * n2; ++c) {
      const double s = cell_sum[c];
      if (!doubtful(s) || (s == 0.0 && !cell[c])) continue;
      const double* Li = &F[(c / n2) * ny];
      const double* Lj = &G[(c % n2) * ny];
      out[c] = logsumexp(ny, [&](int y) { return Li[y] + Lj[y]; });
    }
  }

  // sum P(x1,y) f + sum P(x2,y) g over the pairs of positive mass, in blocks compensated as
  // long_sum()'s (a running sum over 10^5 target values had put the dual bound of constant
  // sources 1.9e-12 above V = 0).
  FASTPID_HD double dual_objective(const double* f, const double* g) const {
    CompensatedSum<double> total;
    auto add = [&](const double* p, const double* x, const char* m, size_t n) {
      for (size_t k0 = 0; k0 < n; k0 += kSumBlock) {
        const size_t end = n - k0 < kSumBlock ? n : k0 + kSumBlock;
        double s = 0.0;
        for (size_t k = k0; k < end; ++k)
          if (m[k]) s += p[k] * x[k];
        total.add(s);
      }
    };
    add(p1y, f, m1, static_cast<size_t>(n1) * ny);
    add(p2y, g, m2, static_cast<size_t>(n2) * ny);
    return total.value();
  }

  // Lower bound on V from any potentials; ls must hold log_s(f, g). The bound of (f + c,
  // g + d), shifted per x1 by c_i = -max_j log s_ij and then per x2 by d_j = -max_i (log s_ij
  // + c_i) over the cells (fastpid/solver.py, dual_bound; rows and cols hold c and d).
  FASTPID_HD double dual_bound(const double* f, const double* g, const double* ls) const {
    double *c = rows, *d = cols;
    double shift = 0.0;
    for (int i = 0; i < n1; ++i) {
      double mx = kNegInf;
      for (int j = 0; j < n2; ++j)
        if (cell[i * n2 + j]) mx = fp_max(mx, ls[i * n2 + j]);
      c[i] = isfinite(mx) ? -mx : 0.0;
      const double p = long_sum(&p1y[i * ny], static_cast<size_t>(ny));  // P(x1): 1 for a constant source
      shift += p * c[i];
    }
    for (int j = 0; j < n2; ++j) {
      double mx = kNegInf;
      for (int i = 0; i < n1; ++i)
        if (cell[i * n2 + j]) mx = fp_max(mx, ls[i * n2 + j] + c[i]);
      d[j] = isfinite(mx) ? -mx : 0.0;
      const double p = long_sum(&p2y[j * ny], static_cast<size_t>(ny));
      shift += p * d[j];
    }
    double top = kNegInf;
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        if (cell[i * n2 + j]) top = fp_max(top, ls[i * n2 + j] + c[i] + d[j]);
    return dual_objective(f, g) + shift - top;
  }

  // H(X1,X2,Y) and H(X1,X2) (nats) of masses Q[n1][n2][ny]: -sum x log x (neg_sum_xlogx())
  // over the entries, and over the cells' sums (left in cell_sum).
  FASTPID_HD void joint_entropies(const double* Q, double& h12y, double& h12) const {
    const double entries = neg_sum_xlogx(Q, static_cast<size_t>(n1) * n2 * ny);
    for (int c = 0; c < n1 * n2; ++c) cell_sum[c] = long_sum(&Q[c * ny], static_cast<size_t>(ny));
    h12y = entries;
    h12 = neg_sum_xlogx(cell_sum, static_cast<size_t>(n1) * n2);
  }

  // q[i][j] = sum_y P(x1=i, y) P(x2=j, y) / p(y): the cell masses of the proxy Q0. The
  // quotients P(x2=j, y) / p(y) first (in d2), n2 ny divisions instead of n1 n2 ny.
  FASTPID_HD void proxy_masses(double* q) const {
    for (int j = 0; j < n2; ++j) {
      FASTPID_SIMD()
      for (int y = 0; y < ny; ++y) d2[j * ny + y] = py[y] > 0 ? p2y[j * ny + y] / py[y] : 0.0;
    }
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) q[i * n2 + j] = long_dot(&p1y[i * ny], &d2[j * ny], static_cast<size_t>(ny));
  }

  // The sums over y of the n rows of pxy[n][ny] (P(x1, y) or P(x2, y)), in cell_sum.
  FASTPID_HD const double* source_marginal(const double* pxy, int n) const {
    for (int i = 0; i < n; ++i) cell_sum[i] = long_sum(&pxy[i * ny], static_cast<size_t>(ny));
    return cell_sum;
  }

  // I(X1,X2;Y), I(X1;Y), I(X2;Y) of P, and I of the proxy Q0 = P(x1,y) P(x2,y) / p(y).
  FASTPID_HD void closed_forms(double& mi, double& mi1, double& mi2, double& mi_q0) const {
    double h12y, h12;
    joint_entropies(P, h12y, h12);
    // The proxy's cell masses, then their sum of x log x.
    proxy_masses(cell_sum);
    const double hq12 = neg_sum_xlogx(cell_sum, static_cast<size_t>(n1) * n2);
    const double h1y = neg_sum_xlogx(p1y, static_cast<size_t>(n1) * ny);
    const double h2y = neg_sum_xlogx(p2y, static_cast<size_t>(n2) * ny);
    // P(x1) and P(x2) in cell_sum (n1 n2 >= max(n1, n2) entries) in turn: every entropy goes
    // through neg_sum_xlogx(), whose sums keep their accuracy.
    const double h1 = neg_sum_xlogx(source_marginal(p1y, n1), static_cast<size_t>(n1));
    const double h2 = neg_sum_xlogx(source_marginal(p2y, n2), static_cast<size_t>(n2));
    const double hy = neg_sum_xlogx(py, static_cast<size_t>(ny));
    int support_y = 0;
    for (int y = 0; y < ny; ++y) support_y += py[y] > 0;
    // Informations, so >= 0: the differences of entropies leave rounding of either sign where
    // they are ~0, and a negative one would cross the closed-form bracket (e.g. a joint of
    // one cell: I1 = I2 = -8.7e-19, I_Q0 = -1.7e-18 put -1.7e-18 of V into the synergy).
    mi = fp_max(h12 + hy - h12y, 0.0);
    mi1 = fp_max(h1 + hy - h1y, 0.0);
    mi2 = fp_max(h2 + hy - h2y, 0.0);
    mi_q0 = fp_max(hq12 + 2.0 * hy - h1y - h2y, 0.0);
    // With a single target value nothing informs about Y: all four are exactly 0 (the sums
    // above leave rounding of either sign, as p(y) = 1 is itself rounded).
    if (support_y == 1) mi = mi1 = mi2 = mi_q0 = 0.0;
  }

  // Q[i][j][y] *= sc[i][y], and sums[j][y] = the sums of the scaled Q over x1, in one pass
  // over Q in memory order.
  FASTPID_HD void scale_rows_then_sum(double* Q, const double* sc, double* sums) const {
    fill(sums, n2 * ny, 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        double* q = &Q[(i * n2 + j) * ny];
        const double* f = &sc[i * ny];
        double* t = &sums[j * ny];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          q[y] *= f[y];
          t[y] += q[y];
        }
      }
  }

  // Upper bound: I of the exactly feasible rounding of Q (Q is overwritten): per y, scale
  // rows, then columns, down to the marginals, then add the outer product of the deficits.
  // A Q with a NaN or infinite entry has no such rounding (the sums below would skip or
  // spread it, and the "bound" could fall below V): its bound is +inf, always valid.
  //
  // Every pass runs over Q in memory order with y innermost (one vector loop per cell); the
  // scale factors per (x1, y) and per (x2, y) are formed first, in d1 and d2 (overwritten by
  // the deficits later). The sums add in the same order as passes per (x1, y) would.
  FASTPID_HD double primal_bound(double* Q) const {
    fill(rows, n1 * ny, 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        double* q = &Q[(i * n2 + j) * ny];
        double* r = &rows[i * ny];
        // The masks as compares of the marginals (m1 is p1y > 0): the byte masks had kept
        // this loop scalar, with a branch per entry.
        const double *a1 = &p1y[i * ny], *a2 = &p2y[j * ny];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          q[y] = (a1[y] > 0.0) & (a2[y] > 0.0) ? q[y] : 0.0;
          r[y] += q[y];
        }
      }
    for (int k = 0; k < n1 * ny; ++k)
      if (!(rows[k] < HUGE_VAL)) return HUGE_VAL;  // NaN fails too
    for (int k = 0; k < n1 * ny; ++k) d1[k] = rows[k] > p1y[k] ? p1y[k] / rows[k] : 1.0;
    scale_rows_then_sum(Q, d1, cols);
    for (int k = 0; k < n2 * ny; ++k) d2[k] = cols[k] > p2y[k] ? p2y[k] / cols[k] : 1.0;
    // The columns' scaling, then the sums over both sources in the same pass.
    fill(rows, n1 * ny, 0.0);
    fill(cols, n2 * ny, 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        double* q = &Q[(i * n2 + j) * ny];
        const double* s = &d2[j * ny];
        double *r = &rows[i * ny], *c = &cols[j * ny];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          q[y] *= s[y];
          r[y] += q[y];
          c[y] += q[y];
        }
      }
    fill(total, ny, 0.0);
    for (int i = 0; i < n1; ++i)
      for (int y = 0; y < ny; ++y) {
        const int k = i * ny + y;
        d1[k] = fp_max(p1y[k] - rows[k], 0.0);
        total[y] += d1[k];
      }
    // d2 / total, once per (j, y); 0 where total is 0 (every d1 of that y is 0 then too).
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) {
        const int k = j * ny + y;
        d2[k] = total[y] > 0 ? fp_max(p2y[k] - cols[k], 0.0) / total[y] : 0.0;
      }
    // The deficits' outer product added, with the cells' sums and Q(y) in the same pass.
    fill(qy, ny, 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        double* q = &Q[(i * n2 + j) * ny];
        const double *a = &d1[i * ny], *b = &d2[j * ny];
        double m = 0;
        FASTPID_SIMD(reduction(+ : m))
        for (int y = 0; y < ny; ++y) {
          q[y] += a[y] * b[y];
          m += q[y];
          qy[y] += q[y];
        }
        // A row longer than a block is summed again, compensated (long_sum()).
        cell_sum[i * n2 + j] = static_cast<size_t>(ny) > kSumBlock ? long_sum(q, static_cast<size_t>(ny)) : m;
      }
    // I_Q(Y; X1, X2) = H(X1,X2) + H(Y) - H(X1,X2,Y); Q(y) = p(y) on the feasible set. H(Y)
    // by neg_sum_xlogx(), as the closed forms take it: a running sum over 10^5 target values
    // had put this bound 2.4e-11 below V = 0 (constant sources).
    const double h12y = neg_sum_xlogx(Q, static_cast<size_t>(n1) * n2 * ny);
    double h12 = 0;
    FASTPID_SIMD(reduction(+ : h12))
    for (int c = 0; c < n1 * n2; ++c) h12 -= xlogx(cell_sum[c]);
    const double hy = neg_sum_xlogx(qy, static_cast<size_t>(ny));
    return h12 + hy - h12y;
  }

  // Sinkhorn half-steps on kernel R (logR, and K = exp(logR)): rows (f) and columns (g) of
  // every y's coupling, f[i][y] = la[i][y] - log sum_j R[i][j] exp(g[j][y]), and likewise g.
  // The sums are products with exp(g - max_j g) (one exp per potential, not per term); a sum
  // that may have lost digits is redone in the log domain.
  FASTPID_HD void row_update(const double* logR, const double* Kr, const double* g, double* f) const {
    half_step(n1, n2, m1, m2, la, logR, Kr, g, f, false);
  }

  FASTPID_HD void col_update(const double* logR, const double* Kr, const double* f, double* g) const {
    half_step(n2, n1, m2, m1, lb, logR, Kr, f, g, true);
  }

  // out[a][y] = lt[a][y] - log sum_b R(a, b) exp(in[b][y]) over a < na, b < nb; R(a, b) is
  // logR / Kr at [a][b], or at [b][a] when `transposed`.
  FASTPID_HD void half_step(int na, int nb, const char* mout, const char* min, const double* lt,
                            const double* logR, const double* Kr, const double* in, double* out,
                            bool transposed) const {
    for (int k = 0; k < nb * ny; ++k) lin[k] = min[k] ? in[k] : kNegInf;
    max_per_y(lin, nb);
    shifted_exp(lin, nb, -1.0, ein);
    for (int a = 0; a < na; ++a)
      weighted_rows(&sums[a * ny], transposed ? &Kr[a] : &Kr[a * nb], transposed ? na : 1, ein, ny, nb, ny);
    // The logs in one vector loop over all rows, then the rest row by row, then the masked
    // and the doubtful entries again.
    FASTPID_SIMD()
    for (int k = 0; k < na * ny; ++k) out[k] = vlog(sums[k]);
    for (int a = 0; a < na; ++a) {
      const double* la_ = &lt[a * ny];
      double* o = &out[a * ny];
      FASTPID_SIMD()
      for (int y = 0; y < ny; ++y) o[y] = la_[y] - shift[y] - o[y];
    }
    // The masked entries in one vector pass, which also counts the doubtful sums (mostly
    // none; a scalar pass with a branch per entry had done both); as in log_s(), without
    // `omp simd`.
    int redo = 0;
    for (int k = 0; k < na * ny; ++k) {
      out[k] = mout[k] ? out[k] : kNegInf;
      redo += (mout[k] != 0) & doubtful(sums[k]);
    }
    if (redo == 0) return;
    for (int a = 0; a < na; ++a)
      for (int y = 0; y < ny; ++y) {
        const int k = a * ny + y;
        if (mout[k] && doubtful(sums[k]))
          out[k] = lt[k] - logsumexp(nb, [&](int b) {
            return (transposed ? logR[b * na + a] : logR[a * nb + b]) + lin[b * ny + y];
          });
      }
  }

  // K = exp(logR) of a kernel on the cells.
  FASTPID_HD void kernel(const double* logR, double* Kr) const {
    FASTPID_SIMD()
    for (int c = 0; c < n1 * n2; ++c) Kr[c] = vexp(logR[c]);
  }

  // Q = R p(y) exp(f + g) on admissible cells: the exponents per cell, then one vector loop
  // of exps over all of Q (loops of ny exps left most of them to the scalar remainder where
  // ny is small); inadmissible entries get exponent -inf, whose vexp is 0.
  FASTPID_HD void coupling(const double* logR, const double* f, const double* g, double* Q) const {
    // The masks go into the potentials first (F, G: -inf where masked), so that each cell's
    // loop is a plain sum (with a select per entry it had compiled to a branch per entry).
    for (int k = 0; k < n1 * ny; ++k) F[k] = m1[k] ? f[k] : kNegInf;
    for (int k = 0; k < n2 * ny; ++k) G[k] = m2[k] ? g[k] : kNegInf;
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        const double lr = logR[i * n2 + j];
        const double *fi = &F[i * ny], *gj = &G[j * ny];
        double* q = &Q[(i * n2 + j) * ny];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) q[y] = lr + logpy[y] + fi[y] + gj[y];
      }
    const size_t n = static_cast<size_t>(n1) * n2 * ny;
    FASTPID_SIMD()
    for (size_t k = 0; k < n; ++k) Q[k] = vexp(Q[k]);
  }
};

// Arrays of one Newton direction. The f-block of each x1 = i is eliminated into the Schur
// complement S on g; what the back substitution needs of it is kept per i.
struct NewtonScratch {
  // Per cell (i, j, y): W = p(y) exp(f + g) and Wt2 = R W / tau (R W is formed where it is
  // summed: one array fewer to store per step), where R is the cell's multiplier (the
  // Hessian's weight); per cell (i, j): oms = tau, the cell's slack (1 - s where the iterate
  // is on s + tau = 1).
  double *W, *Wt2, *oms;
  // Gradient and Jacobi scaling of the f and g unknowns (the scaled system is solved).
  double *grad_f, *sf, *grad_g, *sg;
  // The diagonal parts of the f- and g-blocks before scaling: sum_j R W per (x1, y) and
  // sum_i R W per (x2, y), summed once per point by Solver::barrier_weights() (each had been
  // summed again per unknown, a chain of scalar multiply-adds).
  double *hf, *hg;
  // The Schur elimination (empty with lowrank): the Schur complement over the free g
  // unknowns only (k x k, k = Solver::free_count) and its right-hand side (n2 ny); the free
  // unknowns in order, free_g[l] = j ny + z, their z (free_z), where each j's run of them
  // starts (g_start[j]; g_start[n2] = k), and w_j[z] and d_j[z] of one i in that order
  // (wc, dc).
  double *S, *rhs;
  int *free_g, *free_z, *g_start;
  int* free_j;  // the x2 of each free unknown (combine_flat512())
  double *wc, *dc;
  // Of every i (n1 blocks each, ny^2 doubles): the factor of H_i, kept for the right-hand
  // sides (with gram over the free f unknowns of i only: nf x nf, nf = gram_row[i + 1] -
  // gram_row[i]).
  double* H;
  // Of the current i only: a_j, alpha[j][j'] = a_j.u_j', the right-hand sides of H_i's
  // solve (ny x (n2 + ny); with gram L_i^-1 [a | I] for gram_rows() and a vector for
  // back_substitute()), and the rows A_j
  // (n2 x n2 ny) and B_z (ny x n2 ny) that make up its S update (a, alpha, A and B only
  // without gram).
  double *a, *alpha, *rhs_many, *A, *B;
  // Of every i (n1 blocks each), for reduce_rhs() and back_substitute() (not with gram): u_j,
  // H_i^-1, w_j, d_j and H_i^-1 rf_i.
  double *u, *Hinv, *w, *d, *xf;
  double* dy;  // back_substitute()'s sum_j d_j yg_j of one i
  // With opt.product_form, of every i: whether nw.H's block holds H_i's product form
  // (Solver::product_form_factor() succeeded) instead of its Cholesky factor.
  char* product_form;
  // The Gram assembly (opt.gram): the rows of G_i = L_i^-1 C_i over the free g unknowns
  // (stride gram_ld), one per free f unknown of every block i (those of i from row gram_row[i];
  // gram_row[n1] rows in all), kept for the right-hand sides (reduce_rhs(), back_substitute());
  // S takes them gram_cap rows at most at a time (gram_flush()). Per right-hand side: the
  // free f unknowns' entries of L_i^-1 rf_i in the rows' order (gv, then minus G yg, then
  // yf) and a vector over the free g unknowns (gk). The y of each row (free_f).
  int gram_ld, gram_cap;
  double *Gc, *gv, *gk;
  int *gram_row, *free_f;
  // The low-rank elimination (empty without lowrank), v = n1 + n2 unknowns per y, C = n1 n2
  // cells, y innermost in every array (see Solver::lowrank_factor): kLanes blocks D_y side by
  // side (D, then their factors) and their inverses (Dl; see Solver::lowrank_inverses), D_y^-1
  // of every y (v x v x ny), U's entries aT[c][y] (row i) and bT[c][y] (row n1 + j),
  // Z_y = D_y^-1 U_y of every y (v x C x ny), the capacitance matrix K (C x C, then its
  // factor), its Jacobi scaling kd, the cells' t2 = R / tau (C), and vectors: r, x0, x, z, xb
  // (v x ny), per-cell uc (C).
  double *D, *Dl, *Dinv, *aT, *bT, *Z, *K, *kd, *r, *x0, *x, *z, *xb, *uc, *t2;
  // The diagonal of every D_y (v x ny) and its off-diagonal entries, one per cell (C x ny),
  // as lowrank_factor() assembles them, for lowrank_residual() too.
  double *ldiag, *lcross;
  CholeskyScratch chol;  // Schur: H_i (ny) and S (n2 ny); low-rank: D_y (v) and K (C)

  // schur / lowrank: whether to lay out that elimination's arrays (neither for method "fast");
  // gram: the Gram assembly's instead of the rank-structured update's.
  FASTPID_HD NewtonScratch(int n1, int n2, int ny, bool schur, bool lowrank, bool gram, Arena& arena)
      : W(arena.doubles(wide(n1) * n2 * ny)), Wt2(arena.doubles(wide(n1) * n2 * ny)), oms(arena.doubles(wide(n1) * n2)),
        grad_f(arena.doubles(wide(n1) * ny)), sf(arena.doubles(wide(n1) * ny)), grad_g(arena.doubles(wide(n2) * ny)),
        sg(arena.doubles(wide(n2) * ny)), hf(arena.doubles(wide(n1) * ny)), hg(arena.doubles(wide(n2) * ny)),
        S(arena.doubles(schur ? wide(n2) * ny * n2 * ny : 0)),
        rhs(arena.doubles(schur ? wide(n2) * ny : 0)),
        free_g(reinterpret_cast<int*>(arena.bytes(schur ? sizeof(int) * n2 * ny : 0))),
        free_z(reinterpret_cast<int*>(arena.bytes(schur ? sizeof(int) * n2 * ny : 0))),
        g_start(reinterpret_cast<int*>(arena.bytes(schur ? sizeof(int) * (n2 + 1) : 0))),
        free_j(reinterpret_cast<int*>(arena.bytes(schur ? sizeof(int) * n2 * ny : 0))),
        wc(arena.doubles(schur ? wide(n2) * ny : 0)), dc(arena.doubles(schur ? wide(n2) * ny : 0)),
        H(arena.doubles(schur ? wide(n1) * ny * ny : 0)),
        a(arena.doubles(schur && !gram ? wide(n2) * ny : 0)), alpha(arena.doubles(schur && !gram ? wide(n2) * n2 : 0)),
        rhs_many(arena.doubles(schur ? wide(ny) * padded_row(n2 + ny) : 0)),
        A(arena.doubles(schur && !gram ? static_cast<size_t>(n2) * n2 * ny : 0)),
        B(arena.doubles(schur && !gram ? static_cast<size_t>(ny) * n2 * ny : 0)),
        u(arena.doubles(schur && !gram ? wide(n1) * n2 * ny : 0)),
        Hinv(arena.doubles(schur && !gram ? wide(n1) * ny * ny : 0)),
        w(arena.doubles(schur && !gram ? wide(n1) * n2 * ny : 0)), d(arena.doubles(schur && !gram ? wide(n1) * n2 * ny : 0)),
        xf(arena.doubles(schur && !gram ? wide(n1) * ny : 0)), dy(arena.doubles(schur ? ny : 0)),
        product_form(arena.bytes(schur ? n1 : 0)),
        gram_ld(gram_stride(n2 * ny)), gram_cap(ny * fp_max(1, fp_min(n1, kGramRows / ny))),
        Gc(arena.doubles(schur && gram ? static_cast<size_t>(n1) * ny * gram_ld : 0)),
        gv(arena.doubles(schur && gram ? wide(n1) * ny : 0)), gk(arena.doubles(schur && gram ? wide(n2) * ny : 0)),
        gram_row(reinterpret_cast<int*>(arena.bytes(schur && gram ? sizeof(int) * (n1 + 1) : 0))),
        free_f(reinterpret_cast<int*>(arena.bytes(schur && gram ? sizeof(int) * n1 * ny : 0))),
        D(arena.doubles(lowrank ? static_cast<size_t>(n1 + n2) * (n1 + n2) * kLanes : 0)),
        Dl(arena.doubles(lowrank ? static_cast<size_t>(n1 + n2) * (n1 + n2) * kLanes : 0)),
        Dinv(arena.doubles(lowrank ? static_cast<size_t>(ny) * (n1 + n2) * (n1 + n2) : 0)),
        aT(arena.doubles(lowrank ? wide(n1) * n2 * ny : 0)), bT(arena.doubles(lowrank ? wide(n1) * n2 * ny : 0)),
        Z(arena.doubles(lowrank ? wide(n1 + n2) * n1 * n2 * ny : 0)),
        K(arena.doubles(lowrank ? wide(n1) * n2 * n1 * n2 : 0)),
        kd(arena.doubles(lowrank ? wide(n1) * n2 : 0)),
        r(arena.doubles(lowrank ? wide(n1 + n2) * ny : 0)), x0(arena.doubles(lowrank ? wide(n1 + n2) * ny : 0)),
        x(arena.doubles(lowrank ? wide(n1 + n2) * ny : 0)), z(arena.doubles(lowrank ? wide(n1 + n2) * ny : 0)),
        xb(arena.doubles(lowrank ? wide(n1 + n2) * ny : 0)),
        uc(arena.doubles(lowrank ? wide(n1) * n2 : 0)),
        t2(arena.doubles(lowrank ? wide(n1) * n2 : 0)),
        ldiag(arena.doubles(lowrank ? wide(n1 + n2) * ny : 0)),
        lcross(arena.doubles(lowrank ? static_cast<size_t>(n1) * n2 * ny : 0)),
        chol(lowrank ? fp_max(n1 + n2, n1 * n2) : schur ? n2 * ny : 0, arena) {}
};

// The barrier-Newton solve of one problem (see fastpid/solver.py for the method).
struct Solver {
  const Problem& pr;
  const SolveOptions& opt;
  const int n1, n2, ny;
  double *f, *g;  // potentials; entries outside the masks are not used
  double* R;      // per cell: the multiplier that weights the Newton system
  double *tau, *rp;  // per cell: the slack, which tends to 1 - s, and 1 - s - tau
  double *dtau, *dR;  // per cell: the slack's and the multiplier's steps
  double *logR, *ls, *Q;
  char *fixed_f, *fixed_g;
  double *ft, *gt, *lst;  // trial point, swapped with (f, g, ls) when a step is taken
  double *df, *dg;        // Newton direction
  double *lr, *fp, *gp;   // barrier_primal_bound()'s kernel and potentials
  double* Kr;             // exp of the kernel of the Sinkhorn steps (logR or lr)
  NewtonScratch nw;
  double* corr;  // per cell: the corrector's term added to the target mu (0 outside it)
  double* soc;   // per cell: the corrector's term added to the linearised s (0 outside it)
  double* cw;    // per cell: gradient()'s weight of W
  int* gauge_j;  // per y: the x2 whose g is fixed against the gauge (gauge_x2())
  double warm_e = NAN;  // the alternation's stationarity at its end (NaN: not probed)
  int free_count = 0;  // free g unknowns of the factorised Schur complement
  int gram_done = 0;   // rows of nw.Gc already in S (gram_flush())
  double* best_q = nullptr;  // if set: the feasible coupling behind the current upper bound

  FASTPID_HD Solver(const Problem& pr, const SolveOptions& opt, Arena& arena)
      : pr(pr), opt(opt), n1(pr.n1), n2(pr.n2), ny(pr.ny), f(arena.doubles(wide(n1) * ny)),
        g(arena.doubles(wide(n2) * ny)), R(arena.doubles(wide(n1) * n2)), tau(arena.doubles(wide(n1) * n2)),
        rp(arena.doubles(wide(n1) * n2)), dtau(arena.doubles(wide(n1) * n2)), dR(arena.doubles(wide(n1) * n2)),
        logR(arena.doubles(wide(n1) * n2)), ls(arena.doubles(wide(n1) * n2)),
        Q(arena.doubles(wide(n1) * n2 * ny)), fixed_f(arena.bytes(wide(n1) * ny)),
        fixed_g(arena.bytes(wide(n2) * ny)), ft(arena.doubles(wide(n1) * ny)), gt(arena.doubles(wide(n2) * ny)),
        lst(arena.doubles(wide(n1) * n2)), df(arena.doubles(wide(n1) * ny)), dg(arena.doubles(wide(n2) * ny)),
        lr(arena.doubles(wide(n1) * n2)), fp(arena.doubles(wide(n1) * ny)), gp(arena.doubles(wide(n2) * ny)),
        Kr(arena.doubles(wide(n1) * n2)), nw(n1, n2, ny, opt.newton && !opt.lowrank, opt.newton && opt.lowrank, opt.gram, arena),
        corr(arena.doubles(wide(n1) * n2)), soc(arena.doubles(wide(n1) * n2)), cw(arena.doubles(wide(n1) * n2)),
        gauge_j(reinterpret_cast<int*>(arena.bytes(sizeof(int) * ny))) {}

  // closed (unless null): the four closed forms of closed_forms_one(), which the bracket
  // starts from.
  FASTPID_HD void run(double& lower, double& upper, int64_t& iterations, double* closed = nullptr) {
    double mi, mi1, mi2, mi_q0;
    pr.closed_forms(mi, mi1, mi2, mi_q0);
    if (closed) {
      closed[0] = mi;
      closed[1] = mi1;
      closed[2] = mi2;
      closed[3] = mi_q0;
    }
    lower = fp_max(mi1, mi2);
    upper = fp_min(fp_min(mi_q0, mi), mi1 + mi2);
    if (best_q) start_coupling(mi_q0 <= mi);
    iterations = alternation(opt.warm_steps, opt.omega);
    pr.log_s(f, g, ls);
    lower = fp_max(lower, pr.dual_bound(f, g, ls));
    const bool bound = !opt.newton || warm_bound_due(warm_e, opt.tol);
    if (bound) {
      pr.coupling(logR, f, g, Q);
      improve_upper(upper, pr.primal_bound(Q));
    }
    if (opt.newton) barrier(lower, upper, iterations, start_gap(warm_e, opt.tol, lower, upper));
  }

 private:
  // best_q before any iteration: the better of the two closed-form feasible couplings,
  // the proxy Q0 = P(x1,y) P(x2,y) / p(y) or P itself.
  FASTPID_HD void start_coupling(bool proxy) {
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y) {
          const int k = (i * n2 + j) * ny + y;
          best_q[k] = !proxy ? pr.P[k]
                      : pr.py[y] > 0 ? pr.p1y[i * ny + y] * pr.p2y[j * ny + y] / pr.py[y] : 0.0;
        }
  }

  // upper = min(upper, bound), where bound is I of the feasible coupling now in Q.
  FASTPID_HD void improve_upper(double& upper, double bound) {
    if (!(bound < upper)) return;
    upper = bound;
    if (best_q) copy(Q, static_cast<size_t>(n1) * n2 * ny, best_q);
  }

  FASTPID_HD void proxy_log_r() {
    pr.proxy_masses(logR);
    FASTPID_SIMD()
    for (int c = 0; c < n1 * n2; ++c) logR[c] = logR[c] > 0 ? vlog(logR[c]) : kNegInf;
  }

  // Blahut-Arimoto from the proxy: Sinkhorn sweep, then R <- R s^omega (normalised), `steps`
  // times, and before Newton (opt.newton) more while it would certify by itself (warm_more()),
  // leaving the last probe's stationarity in warm_e. Returns the steps taken (fewer when
  // cancelled).
  FASTPID_HD int alternation(int steps, double omega) {
    proxy_log_r();
    for (int k = 0; k < n2 * ny; ++k) g[k] = pr.m2[k] ? 0.0 : kNegInf;
    const bool extend = warm_block(opt.newton, steps) > 0;
    int s = 0, end = steps;
    double e_before = HUGE_VAL;
    for (; s < end && !opt.cancelled(); ++s) {
      pr.kernel(logR, Kr);
      pr.row_update(logR, Kr, g, f);
      pr.col_update(logR, Kr, f, g);
      pr.log_s(f, g, ls);
      if (extend && (s + 1 == end - kWarmBlock || s + 1 == end)) {
        const double e = stationarity();
        if (s + 1 == end) end = warm_more(end, e, e_before, opt.tol);
        e_before = e;
        warm_e = e;
      }
      FASTPID_SIMD()
      for (int c = 0; c < n1 * n2; ++c) logR[c] = isfinite(logR[c]) ? logR[c] + omega * ls[c] : logR[c];
      const double z = logsumexp(n1 * n2, [&](int c) { return logR[c]; });
      FASTPID_SIMD()
      for (int c = 0; c < n1 * n2; ++c) logR[c] -= z;
    }
    pr.kernel(logR, Kr);
    pr.row_update(logR, Kr, g, f);
    return s;
  }

  // How far the alternation's mixture R is from stationary: max log s - sum R log s over the
  // cells (fastpid/solver.py, stationarity).
  FASTPID_HD double stationarity() const {
    double top = kNegInf, mean = 0.0;
    for (int c = 0; c < n1 * n2; ++c) {
      if (!isfinite(ls[c])) continue;
      top = fp_max(top, ls[c]);
      if (isfinite(logR[c])) mean += vexp(logR[c]) * ls[c];
    }
    return top - mean;
  }

  // Barrier objective (to maximise) at (ff, gg) whose log s is lsv; -inf outside the
  // domain max s < 1.
  FASTPID_HD double barrier_value(const double* lsv, const double* ff, const double* gg,
                                  double mu) const {
    double bar = 0.0;
    for (int c = 0; c < n1 * n2; ++c) {
      if (!pr.cell[c]) continue;
      if (!(lsv[c] < 0.0)) return kNegInf;
      bar += vlog(-expm1(lsv[c]));
    }
    double v = pr.dual_objective(ff, gg) + mu * bar;
    return isfinite(v) ? v : kNegInf;
  }

  FASTPID_HD void gauge_fix() {
    for (int k = 0; k < n1 * ny; ++k) fixed_f[k] = !pr.m1[k];
    for (int k = 0; k < n2 * ny; ++k) fixed_g[k] = !pr.m2[k];
    for (int y = 0; y < ny; ++y) {
      gauge_j[y] = gauge_x2(pr.p2y, n2, ny, y);
      fixed_g[gauge_j[y] * ny + y] = 1;
    }
    if (!opt.lowrank) list_free_g();
  }

  // A fixed g unknown (masked, or the gauge's) would have an identity row and column in S and
  // a zero right-hand side, so S is assembled and factorised over the free unknowns only:
  // clustered joints leave half of them fixed, the assembly's cost falls with the square of
  // the count and the factorisation's with its cube. Lists them (NewtonScratch::free_g).
  FASTPID_HD void list_free_g() {
    int k = 0;
    for (int j = 0; j < n2; ++j) {
      nw.g_start[j] = k;
      for (int z = 0; z < ny; ++z)
        if (!fixed_g[j * ny + z]) {
          nw.free_g[k] = j * ny + z;
          nw.free_j[k] = j;
          nw.free_z[k++] = z;
        }
    }
    nw.g_start[n2] = k;
    free_count = k;
    if (!opt.gram) return;
    int rows = 0;
    for (int i = 0; i < n1; ++i) {
      nw.gram_row[i] = rows;
      for (int y = 0; y < ny; ++y)
        if (!fixed_f[i * ny + y]) nw.free_f[rows++] = y;
    }
    nw.gram_row[n1] = rows;
  }

  // Newton direction of the barrier objective (R and tau at their centre) or of the
  // primal-dual system, toward the complementarity target mu (plus corr per cell); returns
  // dec^2.
  FASTPID_HD double newton_direction(double mu) {
    factor_newton();
    return solve_newton(mu);
  }

  // Factorises the Newton system at the current point (it does not depend on the target).
  // Per x1 = i the f-block H_i is ny x ny and the f-g coupling has the structure
  // C_i[y, (j, z)] = a_j[y] w_j[z] + [y == z] d_j[y], so the Schur complement on g,
  // S = blockdiag(hgg) - sum_i C_i^T H_i^-1 C_i, is assembled from u_j = H_i^-1 a_j and
  // H_i^-1 without forming C_i.
  FASTPID_HD void factor_newton() {
    barrier_weights();
    if (opt.lowrank) {
      lowrank_factor();
      return;
    }
    cholesky(nw.S, free_count, nw.chol, [&] {
      schur_g_block();
      gram_done = 0;
      for (int i = 0; i < n1; ++i) eliminate_f_block(i);
      if (opt.gram) gram_flush(nw.gram_row[n1]);
    });
  }

  // The direction toward the target mu + corr from the factorised system; returns dec^2.
  FASTPID_HD double solve_newton(double mu) {
    gradient(mu);
    if (opt.lowrank) return lowrank_direction();
    reduce_rhs();
    solve_free_g();  // rhs is now yg
    return back_substitute();
  }

  // Solves S yg = rhs in place with factor_newton()'s factor of S (over the free unknowns).
  FASTPID_HD void solve_free_g() {
    const int m = n2 * ny, k = free_count;
    double* rhs = nw.rhs;
    const int* idx = nw.free_g;
    for (int a = 0; a < k; ++a) rhs[a] = rhs[idx[a]];  // idx[a] >= a: front to back
    cholesky_solve(nw.S, k, rhs);
    for (int a = k - 1; a >= 0; --a) rhs[idx[a]] = rhs[a];  // back to front
    for (int q = 0; q < m; ++q)
      if (fixed_g[q]) rhs[q] = 0.0;
  }

  // W, Wt2, oms, hf and hg (see NewtonScratch) and rp at the current point, and the Jacobi
  // scalings 1 / sqrt(diag H) of the f and g unknowns (0 on fixed ones), whose sums run with
  // y innermost, each in the order of the cells (grad_f and grad_g hold the sums of sd until
  // gradient() overwrites them).
  FASTPID_HD void barrier_weights() {
    double *W = nw.W, *Wt2 = nw.Wt2;
    double *stf = nw.hf, *sdf = nw.grad_f, *stg = nw.hg, *sdg = nw.grad_g;
    pr.factors(f, g);
    FASTPID_SIMD()
    for (int c = 0; c < n1 * n2; ++c) rp[c] = pr.cell[c] ? -vexpm1(ls[c]) - tau[c] : 0.0;
    copy(tau, static_cast<size_t>(n1) * n2, nw.oms);
    fill(stf, static_cast<size_t>(n1) * ny, 0.0);
    fill(sdf, static_cast<size_t>(n1) * ny, 0.0);
#if !defined(__AVX512F__) || defined(__CUDA_ARCH__)
    fill(stg, static_cast<size_t>(n2) * ny, 0.0);
    fill(sdg, static_cast<size_t>(n2) * ny, 0.0);
#endif
    for (int i = 0; i < n1; ++i) {
      const double *a = &pr.eF[i * ny], *a1 = &pr.p1y[i * ny];
      const size_t c0 = static_cast<size_t>(i) * n2;
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
      cell_weights512(n2, ny, a, a1, pr.eG, pr.p2y, R + c0, tau + c0, W + c0 * ny, Wt2 + c0 * ny, stf + i * ny,
                      sdf + i * ny);
#else
      for (int j = 0; j < n2; ++j) {
        const size_t c = c0 + j, k = c * ny;
        const double t = R[c], t2 = t / tau[c];
        const double *b = &pr.eG[j * ny], *a2 = &pr.p2y[j * ny];
        double *tf = &stf[i * ny], *df_ = &sdf[i * ny], *tg = &stg[j * ny], *dg_ = &sdg[j * ny];
        // The mask as a select on compares of the marginals (m1 is p1y > 0): one vector loop
        // (with the byte masks, a vector loop and a scalar remainder).
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          const double w = (a1[y] > 0.0) & (a2[y] > 0.0) ? a[y] * b[y] : 0.0;
          const double v = t2 * w;
          W[k + y] = w;
          Wt2[k + y] = v;
          tf[y] += t * w;
          df_[y] += v * w;
          tg[y] += t * w;
          dg_[y] += v * w;
        }
      }
#endif
    }
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    column_sums512(n1, n2, ny, R, W, Wt2, stg, sdg);
#endif
    // The fixed unknowns by compares of the marginals, then the gauge's (as in gradient()):
    // with the byte masks these loops were scalar.
    double *sf = nw.sf, *sg = nw.sg;
    FASTPID_SIMD()
    for (int q = 0; q < n1 * ny; ++q) sf[q] = pr.p1y[q] > 0.0 ? 1.0 / sqrt(fp_max(sdf[q] + stf[q], 1e-300)) : 0.0;
    FASTPID_SIMD()
    for (int q = 0; q < n2 * ny; ++q) sg[q] = pr.p2y[q] > 0.0 ? 1.0 / sqrt(fp_max(sdg[q] + stg[q], 1e-300)) : 0.0;
    for (int y = 0; y < ny; ++y) sg[gauge_j[y] * ny + y] = 0.0;
  }

  // Right-hand sides of the primal-dual Newton system for f and g (0 on fixed unknowns):
  // each cell weighted by (mu + corr + R soc - R rp) / tau, which is mu / (1 - s) where the
  // slack is 1 - s and corr and soc are 0. The sums run as in barrier_weights().
  FASTPID_HD void gradient(double mu) {
    const double* W = nw.W;
    double *gf = nw.grad_f, *gg = nw.grad_g;
    FASTPID_SIMD()
    for (int c = 0; c < n1 * n2; ++c) cw[c] = (mu + corr[c] + R[c] * soc[c] - R[c] * rp[c]) / nw.oms[c];
    // Per x1 the sum over x2, then per x2 the sum over x1, each kept in registers
    // (weighted_rows(); one pass updating both loaded and stored x1's sums once per x2).
    for (int i = 0; i < n1; ++i)
      weighted_rows(&gf[i * ny], &cw[i * n2], 1, &W[static_cast<size_t>(i) * n2 * ny], ny, n2, ny);
    for (int j = 0; j < n2; ++j)
      weighted_rows(&gg[j * ny], &cw[j], n2, &W[static_cast<size_t>(j) * ny], static_cast<size_t>(n2) * ny, n1, ny);
    // fixed_f is P(x1, y) = 0, fixed_g P(x2, y) = 0 or the gauge's (gauge_fix()).
    FASTPID_SIMD()
    for (int q = 0; q < n1 * ny; ++q) gf[q] = pr.p1y[q] > 0.0 ? pr.p1y[q] - gf[q] : 0.0;
    FASTPID_SIMD()
    for (int q = 0; q < n2 * ny; ++q) gg[q] = pr.p2y[q] > 0.0 ? pr.p2y[q] - gg[q] : 0.0;
    for (int y = 0; y < ny; ++y) gg[gauge_j[y] * ny + y] = 0.0;
  }

  // S = blockdiag(hgg) over the free g unknowns: the g-block before any f-block is
  // eliminated.
  FASTPID_HD void schur_g_block() {
    const int k = free_count;
    const double *W = nw.W, *Wt2 = nw.Wt2, *sg = nw.sg;
    const int *gs = nw.g_start, *fz = nw.free_z;
    double *S = nw.S, *blk = nw.rhs_many;  // rhs_many holds one ny x ny block here
    for (int j = 0; j < n2; ++j) {
      if (gs[j] == gs[j + 1]) continue;
      // Block j: sum_i Wt2_ij W_ij^T over j's free unknowns (or over all y, then those
      // picked), then scaled into S's rows and columns of them (lower triangle).
      const int nj = gs[j + 1] - gs[j];
      const bool at = nj < ny && nj <= kOuterAtMost;
      const size_t stride = static_cast<size_t>(n2) * ny;
      if (at) {
        sum_outer_lower_at(blk, &Wt2[j * ny], &W[j * ny], n1, stride, fz + gs[j], nj);
      } else {
        sum_outer_lower(blk, &Wt2[j * ny], &W[j * ny], n1, stride, ny);
      }
      const double* sj = &sg[j * ny];
      for (int a = gs[j]; a < gs[j + 1]; ++a) {
        const int y = fz[a];
        double* Sa = &S[static_cast<size_t>(a) * k];
        fill(Sa, static_cast<size_t>(gs[j]), 0.0);  // the lower triangle left of block j
        for (int b = gs[j]; b <= a; ++b) {
          const double v = at ? blk[(a - gs[j]) * nj + b - gs[j]] : blk[y * ny + fz[b]];
          Sa[b] = v * sj[y] * sj[fz[b]];
        }
        Sa[a] += sj[y] * sj[y] * nw.hg[j * ny + y];
      }
    }
  }

  // S -= C_i^T H_i^-1 C_i for x1 = i; keeps the factor of H_i, u, Hinv, w and d of this i
  // for reduce_rhs() and back_substitute().
  FASTPID_HD void eliminate_f_block(int i) {
    const double *W = nw.W, *Wt2 = nw.Wt2, *sf = nw.sf, *sg = nw.sg;
    double *a = nw.a, *alpha = nw.alpha, *S = nw.S;
    double* H = nw.H + static_cast<size_t>(i) * ny * ny;
    double* u = nw.u + static_cast<size_t>(i) * n2 * ny;
    double* Hinv = nw.Hinv + static_cast<size_t>(i) * ny * ny;
    // H_i's Cholesky factor, unless the product form takes its place below.
    if (!opt.product_form) factor_f_block(i);
    const size_t c0 = static_cast<size_t>(i) * n2 * ny;  // cell (i, 0)'s first entry
    const int k_free = free_count;
    const int *gs = nw.g_start, *fq = nw.free_g, *fz = nw.free_z;
    double *A = nw.A, *B = nw.B, *wc = nw.wc, *dc = nw.dc;
    for (int j = 0; j < n2; ++j) {
      const double t = R[i * n2 + j];
      for (int l = gs[j]; l < gs[j + 1]; ++l) {
        wc[l] = W[c0 + fq[l]] * sg[fq[l]];
        dc[l] = sf[i * ny + fz[l]] * sg[fq[l]] * (t * W[c0 + fq[l]]);
      }
    }
    if (opt.gram) {  // S -= G_i^T G_i instead, G_i = L_i^-1 C_i (gram_rows())
      gram_rows(i);
      return;
    }
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) a[j * ny + y] = sf[i * ny + y] * Wt2[c0 + j * ny + y];
    double* w = nw.w + c0;  // w_j and d_j over all (j, z), for reduce_rhs(), back_substitute()
    double* d = nw.d + c0;
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) {
        const int q = j * ny + y;
        w[q] = W[c0 + q] * sg[q];
        d[q] = sf[i * ny + y] * sg[q] * (R[i * n2 + j] * W[c0 + q]);
      }
    // One solve with H_i for the right-hand sides [a_0 .. a_{n2-1} | identity]: u_j and
    // H_i^-1 (the Gram assembly needs neither: it keeps the rows of G instead, see
    // gram_reduce_rhs()).
    const int k = n2 + ny;
    double* rm = nw.rhs_many;
    for (int y = 0; y < ny; ++y) {
      double* By = &rm[y * k];
      for (int j = 0; j < n2; ++j) By[j] = a[j * ny + y];
      for (int z = 0; z < ny; ++z) By[n2 + z] = y == z ? 1.0 : 0.0;
    }
    nw.product_form[i] = opt.product_form && product_form_factor(i);
    if (nw.product_form[i]) {
      product_form_solve(i, rm, k);
    } else {
      if (opt.product_form) factor_f_block(i);  // its diagonal was not safely positive
      cholesky_solve_many(H, ny, rm, k);
    }
    for (int y = 0; y < ny; ++y) {
      const double* By = &rm[y * k];
      for (int j = 0; j < n2; ++j) u[j * ny + y] = By[j];
      for (int z = 0; z < ny; ++z) Hinv[y * ny + z] = By[n2 + z];
    }
    // Row (j, z) of C_i^T H_i^-1 C_i is w_j[z] A_j + d_j[z] B_z over the columns (jp, zp), with
    //   A_j[(jp, zp)] = alpha[j][jp] w_jp[zp] + u_j[zp] d_jp[zp],
    //   B_z[(jp, zp)] = u_jp[z] w_jp[zp] + Hinv[z][zp] d_jp[zp],
    // so each row's update is one contiguous pass over its columns jp <= j (cholesky() reads
    // the lower triangle of the symmetric S), long even where ny is small. Rows and columns
    // are the free g unknowns only (list_free_g); A_j and B_z are built over them by
    // combine_free() from alpha, u and H_i^-1 (rm's row z: u_jp[z] over jp, then Hinv[z]).
    //
    // alpha[j][jp] = a_j . u_jp for jp <= j, as rows over jp from rm's columns (u_jp[y] is
    // rm[y][jp]), summed over y by weighted_rows(); a_j[y] is 0 (skipped) where the pair
    // (i, y) or (j, y) has no mass.
    for (int j = 0; j < n2; ++j) weighted_rows(&alpha[j * n2], &a[j * ny], 1, rm, k, ny, j + 1);
    for (int j = 0; j < n2; ++j) {
      bool rows = false;  // whether any row of j is updated (w or d nonzero)
      for (int l = gs[j]; l < gs[j + 1] && !rows; ++l) rows = wc[l] != 0.0 || dc[l] != 0.0;
      if (rows) combine_free(&alpha[j * n2], &u[j * ny], j + 1, &A[static_cast<size_t>(j) * k_free]);
    }
    for (int z = 0; z < ny; ++z)  // rm's row z: u_jp[z] over jp, then Hinv[z]
      combine_free(&rm[z * k], &rm[z * k + n2], n2, &B[static_cast<size_t>(z) * k_free]);
    for (int j = 0; j < n2; ++j) {
      const double* Aj = &A[static_cast<size_t>(j) * k_free];
      for (int l = gs[j]; l < gs[j + 1]; ++l) {
        const double wz = wc[l], dz = dc[l];
        if (wz == 0.0 && dz == 0.0) continue;
        const double* Bz = &B[static_cast<size_t>(fz[l]) * k_free];
        double* row = &S[static_cast<size_t>(l) * k_free];
        FASTPID_SIMD()
        for (int q = 0; q <= l; ++q) row[q] -= wz * Aj[q] + dz * Bz[q];
      }
    }
  }

  // The Cholesky factor of H_i = sum_j Wt2_ij W_ij^T + diag(sum_j R_ij W_ij), Jacobi-scaled
  // (and 1 on the diagonal of fixed f unknowns), in nw.H's block i; with gram over the free f
  // unknowns only (see factor_free_f_block()).
  FASTPID_HD void factor_f_block(int i) {
    if (opt.gram) return factor_free_f_block(i);
    const double *W = nw.W, *Wt2 = nw.Wt2, *sf = nw.sf;
    double* H = nw.H + static_cast<size_t>(i) * ny * ny;
    cholesky(H, ny, nw.chol, [&] {
      sum_outer_lower(H, &Wt2[i * n2 * ny], &W[i * n2 * ny], n2, ny, ny);
      for (int y = 0; y < ny; ++y)
        for (int z = 0; z <= y; ++z) H[y * ny + z] *= sf[i * ny + y] * sf[i * ny + z];
      for (int y = 0; y < ny; ++y) H[y * ny + y] += f_block_diagonal(i, y);
    });
  }

  // factor_f_block() over the nf free f unknowns of i (rows gram_row[i] .. of G, their y in
  // free_f), nf x nf: a fixed f unknown's row and column of H_i are 0 but for the 1 on the
  // diagonal, so it decouples, and sparse joints leave few free (~4 of 10 y per x1 on the
  // digits joint). The same operations on the free entries as over all ny.
  FASTPID_HD void factor_free_f_block(int i) {
    const double* sf = nw.sf + i * ny;
    const int r0 = nw.gram_row[i], nf = nw.gram_row[i + 1] - r0;
    const int* fy = nw.free_f + r0;
    double* H = nw.H + static_cast<size_t>(i) * ny * ny;
    const size_t c0 = static_cast<size_t>(i) * n2 * ny;
    double* full = nw.rhs_many;  // ny x ny here; gram_rows() fills it after
    cholesky(H, nf, nw.chol, [&] {
      // The sums over j of the free entries only (in H), or of all y and then the free ones
      // picked (as schur_g_block()).
      const bool at = nf < ny && nf <= kOuterAtMost;
      if (at) {
        sum_outer_lower_at(H, &nw.Wt2[c0], &nw.W[c0], n2, ny, fy, nf);
      } else {
        sum_outer_lower(full, &nw.Wt2[c0], &nw.W[c0], n2, ny, ny);
      }
      for (int a = 0; a < nf; ++a) {
        const int y = fy[a];
        for (int b = 0; b <= a; ++b) {
          const double v = at ? H[a * nf + b] : full[y * ny + fy[b]];
          H[a * nf + b] = v * (sf[y] * sf[fy[b]]);
        }
        H[a * nf + a] += f_block_diagonal(i, y);
      }
    });
  }

  // H_i's diagonal part at (y, y), Jacobi-scaled: sf^2 sum_j R_ij W_ij[y] (1 for a fixed f
  // unknown).
  FASTPID_HD double f_block_diagonal(int i, int y) const {
    const int q = i * ny + y;
    return nw.sf[q] * nw.sf[q] * nw.hf[q] + (fixed_f[q] ? 1.0 : 0.0);
  }

  // H_i's product form in nw.H's block i (ny^2 doubles; see product_form_suits()): H_i = D +
  // sum_j alpha_j v_j v_j^T (D the diagonal part, v_j = sf_i W_ij, alpha_j = R / tau of cell
  // (i, j)) is L_0 .. L_{n2-1} D' L_{n2-1}^T .. L_0^T, one rank-one update of a diagonal LDL^T
  // factor per j (Gill, Golub, Murray and Saunders' method C1), each L_j unit lower
  // triangular with entries p_j[y] beta_j[z] below the diagonal, so applying one costs 2 ny
  // flops per column: ny (n2 + ny) (4 n2 + 1) flops for H_i^-1 [a | I], against ny^3 / 3 for
  // the Cholesky factor and 2 ny^2 (n2 + ny) for its solves. Every update adds a positive term
  // (each d grows), which keeps it stable. False where D or the factor is not positive and
  // finite (the block is then factorised by Cholesky).
  FASTPID_HD bool product_form_factor(int i) {
    const double *W = nw.W, *sf = nw.sf + i * ny;
    double* dd = nw.H + static_cast<size_t>(i) * ny * ny;  // D, then D'
    double* pv = dd + ny;                                    // p_j, n2 x ny
    double* bv = pv + n2 * ny;                               // beta_j, n2 x ny
    bool ok = true;
    for (int y = 0; y < ny; ++y) {
      dd[y] = f_block_diagonal(i, y);
      ok = ok && dd[y] > 0.0 && dd[y] < -kNegInf;
    }
    if (!ok) return false;
    for (int j = 0; j < n2; ++j) {
      const int c = i * n2 + j;
      double *p = pv + j * ny, *beta = bv + j * ny;
      const double* w = &W[static_cast<size_t>(c) * ny];
      for (int y = 0; y < ny; ++y) p[y] = sf[y] * w[y];
      product_sweeps(p, 1, pv, bv, j, false);  // p = L_{j-1}^-1 .. L_0^-1 p
      const double alpha = R[c] / nw.oms[c];
      double t = 1.0;  // alpha times method C1's t
      for (int y = 0; y < ny; ++y) {
        const double r = p[y] / dd[y], tn = t + alpha * p[y] * r;
        beta[y] = alpha * r / tn;
        dd[y] *= tn / t;
        t = tn;
      }
    }
    for (int y = 0; y < ny; ++y) ok = ok && dd[y] > 0.0 && dd[y] < -kNegInf;
    return ok;
  }

  // xf_i = H_i^-1 xf_i for the blocks i held in product form (reduce_rhs()), four at a time:
  // one block's sweeps with a single column are a chain of dependent multiply-adds (two per
  // row and factor), which four independent blocks' chains fill out. Each block gets the
  // operations of product_form_solve() in the same order (the same results).
  FASTPID_HD void product_form_solve_rhs() {
    if (!opt.product_form) return;
    int idx[4], count = 0;
    for (int i = 0; i < n1; ++i) {
      if (!nw.product_form[i]) continue;
      idx[count++] = i;
      if (count == 4) {
        solve_rhs_blocks<4>(idx);
        count = 0;
      }
    }
    for (int c = 0; c < count; ++c) solve_rhs_blocks<1>(idx + c);
  }

  template <int C>
  FASTPID_HD void solve_rhs_blocks(const int* idx) {
    switch (n2) {
      case 1: return solve_rhs_lanes<1, C>(idx);
      case 2: return solve_rhs_lanes<2, C>(idx);
      case 3: return solve_rhs_lanes<3, C>(idx);
      case 4: return solve_rhs_lanes<4, C>(idx);
    }
    for (int c = 0; c < C; ++c) product_form_solve(idx[c], nw.xf + static_cast<size_t>(idx[c]) * ny, 1);
  }

  // product_form_solve() of xf_i for the C blocks i = idx[c] side by side, M = n2 factors, the
  // running sums in registers; the scaling by D' is applied as each row's forward sweep ends.
  template <int M, int C>
  FASTPID_HD void solve_rhs_lanes(const int* idx) {
    const double *dd[C], *pv[C], *bv[C];
    double* x[C];
    for (int c = 0; c < C; ++c) {
      dd[c] = nw.H + static_cast<size_t>(idx[c]) * ny * ny;
      pv[c] = dd[c] + ny;
      bv[c] = pv[c] + n2 * ny;
      x[c] = nw.xf + static_cast<size_t>(idx[c]) * ny;
    }
    double acc[M][C], v[C];
    for (int j = 0; j < M; ++j)
      for (int c = 0; c < C; ++c) acc[j][c] = 0.0;
    for (int y = 0; y < ny; ++y) {  // L_{M-1}^-1 .. L_0^-1, then D'^-1
      for (int c = 0; c < C; ++c) v[c] = x[c][y];
      for (int j = 0; j < M; ++j)
        for (int c = 0; c < C; ++c) {
          v[c] -= pv[c][j * ny + y] * acc[j][c];
          acc[j][c] += bv[c][j * ny + y] * v[c];
        }
      for (int c = 0; c < C; ++c) x[c][y] = v[c] * (1.0 / dd[c][y]);
    }
    for (int j = 0; j < M; ++j)
      for (int c = 0; c < C; ++c) acc[j][c] = 0.0;
    for (int y = ny - 1; y >= 0; --y) {  // L_0^-T .. L_{M-1}^-T
      for (int c = 0; c < C; ++c) v[c] = x[c][y];
      for (int j = M - 1; j >= 0; --j)
        for (int c = 0; c < C; ++c) {
          v[c] -= bv[c][j * ny + y] * acc[j][c];
          acc[j][c] += pv[c][j * ny + y] * v[c];
        }
      for (int c = 0; c < C; ++c) x[c][y] = v[c];
    }
  }

  // Solves H_i X = X in place for the k columns of X (rows y, stride k) with
  // product_form_factor()'s factors of block i.
  FASTPID_HD void product_form_solve(int i, double* X, int k) {
    const double* dd = nw.H + static_cast<size_t>(i) * ny * ny;
    const double *pv = dd + ny, *bv = pv + n2 * ny;
    product_sweeps(X, k, pv, bv, n2, false);  // X = L_{n2-1}^-1 .. L_0^-1 X
    for (int y = 0; y < ny; ++y) {
      double* x = X + static_cast<size_t>(y) * k;
      const double inv = 1.0 / dd[y];
      FASTPID_SIMD()
      for (int q = 0; q < k; ++q) x[q] *= inv;
    }
    product_sweeps(X, k, pv, bv, n2, true);  // X = L_0^-T .. L_{n2-1}^-T X
  }

  // The product-form factors L_0 .. L_{m-1} (entries p_j[y] beta_j[z] below the diagonal;
  // p_j = pv + j ny, beta_j = bv + j ny) applied to the k columns of X (rows y, stride k):
  // X = L_{m-1}^-1 .. L_0^-1 X, or where `back` X = L_0^-T .. L_{m-1}^-T X. Applying L_j^-1
  // is a sweep over the rows y ascending, x_y -= p_j[y] acc_j, then acc_j += beta_j[y] x_y,
  // acc_j the running sum over the rows swept (L_j^-T: descending, the roles of p_j and beta_j
  // swapped). Factor j's step at row y needs only rows up to y, so all m sweeps go in one pass
  // over the rows, each row through the factors in turn: the same operations in the same
  // order as one sweep per factor. Up to four factors, by blocks of 16, 8, then single
  // columns, the block of a row and the m running sums stay in registers (sweep_block()); more
  // factors keep their m k running sums in the rows B_z, which hold nothing while the sweeps
  // run (eliminate_f_block() fills them after its solve; reduce_rhs() runs after every block's).
  FASTPID_HD void product_sweeps(double* X, int k, const double* pv, const double* bv, int m, bool back) const {
    const double *a = back ? bv : pv, *b = back ? pv : bv;
    switch (m) {
      case 0: return;
      case 1: return sweep_blocks<1>(X, k, a, b, back);
      case 2: return sweep_blocks<2>(X, k, a, b, back);
      case 3: return sweep_blocks<3>(X, k, a, b, back);
      case 4: return sweep_blocks<4>(X, k, a, b, back);
    }
    double* acc = nw.B;
    fill(acc, static_cast<size_t>(m) * k, 0.0);
    for (int r = 0; r < ny; ++r) {
      const int y = back ? ny - 1 - r : r;
      double* x = X + static_cast<size_t>(y) * k;
      for (int t = 0; t < m; ++t) {
        const int j = back ? m - 1 - t : t;
        const double ay = a[j * ny + y], by = b[j * ny + y];
        double* aj = acc + static_cast<size_t>(j) * k;
        FASTPID_SIMD()
        for (int q = 0; q < k; ++q) {
          x[q] -= ay * aj[q];
          aj[q] += by * x[q];
        }
      }
    }
  }

  template <int M>
  FASTPID_HD void sweep_blocks(double* X, int k, const double* a, const double* b, bool back) const {
    int c0 = 0;
    for (; c0 + 16 <= k; c0 += 16) sweep_block<M, 16>(X + c0, k, a, b, back);
    for (; c0 + 8 <= k; c0 += 8) sweep_block<M, 8>(X + c0, k, a, b, back);
    for (; c0 < k; ++c0) sweep_block<M, 1>(X + c0, k, a, b, back);
  }

  // product_sweeps() of M factors on the C columns from X (row stride k), in registers.
  template <int M, int C>
  FASTPID_HD void sweep_block(double* X, int k, const double* a, const double* b, bool back) const {
    double acc[M][C], x[C];
    for (int j = 0; j < M; ++j)
      for (int c = 0; c < C; ++c) acc[j][c] = 0.0;
    for (int r = 0; r < ny; ++r) {
      const int y = back ? ny - 1 - r : r;
      double* Xy = X + static_cast<size_t>(y) * k;
      for (int c = 0; c < C; ++c) x[c] = Xy[c];
      for (int t = 0; t < M; ++t) {
        const int j = back ? M - 1 - t : t;
        const double ay = a[j * ny + y], by = b[j * ny + y];
        for (int c = 0; c < C; ++c) {
          x[c] -= ay * acc[j][c];
          acc[j][c] += by * x[c];
        }
      }
      for (int c = 0; c < C; ++c) Xy[c] = x[c];
    }
  }

  // out[l] = x[j] wc[l] + v[z] dc[l] over the free unknowns l = (j, z) with j < runs: the
  // runs of each j in turn, a complete run (all ny of its z free, as in dense joints) read
  // contiguously, the others by index.
  FASTPID_HD void combine_free(const double* x, const double* v, int runs, double* out) const {
    const int *gs = nw.g_start, *fz = nw.free_z;
    const double *wc = nw.wc, *dc = nw.dc;
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    if (ny <= 16 && runs <= 32) return combine_flat512(x, v, ny, runs, nw.free_j, fz, wc, dc, gs[runs], out);
    if (ny <= 16) return combine_runs512(x, v, ny, gs, fz, wc, dc, runs, out);
#endif
    for (int j = 0; j < runs; ++j) {
      const int l0 = gs[j], len = gs[j + 1] - l0;
      const double xj = x[j];
      if (len == ny) {
        FASTPID_SIMD()
        for (int z = 0; z < ny; ++z) out[l0 + z] = xj * wc[l0 + z] + v[z] * dc[l0 + z];
      } else {
        FASTPID_SIMD()
        for (int l = l0; l < l0 + len; ++l) out[l] = xj * wc[l] + v[fz[l]] * dc[l];
      }
    }
  }

  // Appends the rows of G_i = L_i^-1 C_i (L_i: the factor of H_i, in nw.H) for the free f
  // unknowns of x1 = i to nw.Gc, after a gram_flush() where they would not fit. Row y of C_i
  // over the free g unknowns l = (j, z) is a_j[y] w_j[z] + [z == y] d_j[y] (wc, dc of this i),
  // so row y of G_i is U[y][j] w_j[z] + Li[y][z] d_j[z] with U = L_i^-1 [a_0 .. a_{n2-1}]
  // (nf x n2) and Li = L_i^-1 (nf x ny, 0 at the fixed z): one small forward substitution,
  // then one combine_free() pass per row (substituting through the rows of length k themselves
  // took 1.8x the time on dense 10x10x10: a gather per entry to form C_i, and a load and a
  // store per multiply-add).
  // Rows of fixed f unknowns are 0 in C_i and decouple in L_i, and so are left out: L_i is
  // over the free f unknowns only (factor_free_f_block()).
  FASTPID_HD void gram_rows(int i) {
    const int k = free_count, ld = nw.gram_ld, kp = gram_stride(k);
    const int r0 = nw.gram_row[i], nf = nw.gram_row[i + 1] - r0;
    const int* fy = nw.free_f + r0;
    const double* Wt2 = nw.Wt2 + static_cast<size_t>(i) * n2 * ny;
    const double* L = nw.H + static_cast<size_t>(i) * ny * ny;
    // Row r (free y = fy[r]) of X = L_i^-1 [a_0[y] .. a_{n2-1}[y] | e_y], n2 + ny long (rows
    // padded with zeros to mp): U's row, then Li's (0 at the fixed z). Every row is set
    // before the substitution, which subtracts every earlier row in turn.
    const int m = n2 + ny, mp = padded_row(m);
    double* X = nw.rhs_many;
    for (int r = 0; r < nf; ++r) {
      const int y = fy[r];
      double* Xr = &X[r * mp];
      const double sy = nw.sf[i * ny + y];
      for (int j = 0; j < n2; ++j) Xr[j] = sy * Wt2[j * ny + y];  // a_j[y]
      for (int z = n2; z < mp; ++z) Xr[z] = z == n2 + y ? 1.0 : 0.0;
    }
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    substitute_rows512(X, L, nf, mp);
#else
    for (int r = 0; r < nf; ++r) {
      double* Xr = &X[r * mp];
      const double* Lr = L + static_cast<size_t>(r) * nf;
      weighted_rows<true>(Xr, Lr, 1, X, mp, r, m);
      const double inv = 1.0 / Lr[r];
      FASTPID_SIMD()
      for (int q = 0; q < m; ++q) Xr[q] *= inv;
    }
#endif
    if (nw.gram_row[i + 1] - gram_done > nw.gram_cap) gram_flush(r0);
    double* row = nw.Gc + static_cast<size_t>(r0) * ld;
    for (int r = 0; r < nf; ++r) {
      combine_free(&X[r * mp], &X[r * mp + n2], n2, row);
      for (int l = k; l < kp; ++l) row[l] = 0.0;  // the tiles' padding
      row += ld;
    }
  }

  // S -= G^T G over the rows of nw.Gc from gram_done to end.
  FASTPID_HD void gram_flush(int end) {
    const double* rows = nw.Gc + static_cast<size_t>(gram_done) * nw.gram_ld;
    gram_update(nw.S, free_count, free_count, rows, end - gram_done, nw.gram_ld);
    gram_done = end;
  }

  // rhs = rg - sum_i C_i^T H_i^-1 rf_i, the right-hand side of the Schur system; keeps
  // xf = H_i^-1 rf_i of every i for back_substitute() (with gram: L_i^-1 rf_i in gv; see
  // gram_reduce_rhs()).
  FASTPID_HD void reduce_rhs() {
    const double *Wt2 = nw.Wt2, *sf = nw.sf;
    double* rhs = nw.rhs;
    for (int q = 0; q < n2 * ny; ++q) rhs[q] = nw.grad_g[q] * nw.sg[q];
    if (opt.gram) {
      gram_reduce_rhs();
      return;
    }
    for (int i = 0; i < n1; ++i) {
      const double* H = nw.H + static_cast<size_t>(i) * ny * ny;
      double* xf = nw.xf + static_cast<size_t>(i) * ny;
      for (int y = 0; y < ny; ++y) xf[y] = nw.grad_f[i * ny + y] * sf[i * ny + y];
      // A solve, not H_i^-1 times rf_i: near the end of a 1e-10 solve that product had made
      // sparse joints take up to 30x the steps.
      if (!(opt.product_form && nw.product_form[i])) cholesky_solve(H, ny, xf);
    }
    product_form_solve_rhs();
    for (int i = 0; i < n1; ++i) {
      const double* w = nw.w + static_cast<size_t>(i) * n2 * ny;
      const double* d = nw.d + static_cast<size_t>(i) * n2 * ny;
      const double* xf = nw.xf + static_cast<size_t>(i) * ny;
      for (int j = 0; j < n2; ++j) {
        double ax = 0;  // a_j . xf
        for (int y = 0; y < ny; ++y) ax += sf[i * ny + y] * Wt2[(i * n2 + j) * ny + y] * xf[y];
        for (int z = 0; z < ny; ++z) rhs[j * ny + z] -= w[j * ny + z] * ax + d[j * ny + z] * xf[z];
      }
    }
  }

  // reduce_rhs() by the kept rows of G = L^-1 C (gram_rows()): sum_i C_i^T H_i^-1 rf_i is
  // G^T t with t_i = L_i^-1 rf_i, one pass over G's rows instead of two passes over the cells
  // and two solves with H_i. Fixed f unknowns have rf 0 and decouple in L_i, so t and G have
  // no entries for them (L_i is over the free ones); rhs is summed over the free g unknowns only (solve_free_g()
  // zeroes the others).
  FASTPID_HD void gram_reduce_rhs() {
    double *t = nw.gv, *c = nw.gk;
    for (int i = 0; i < n1; ++i) {
      const int r0 = nw.gram_row[i], nf = nw.gram_row[i + 1] - r0;
      for (int r = r0; r < r0 + nf; ++r) {
        const int q = i * ny + nw.free_f[r];
        t[r] = nw.grad_f[q] * nw.sf[q];
      }
      cholesky_forward(nw.H + static_cast<size_t>(i) * ny * ny, nf, t + r0);
    }
    const int k = free_count;
    weighted_rows(c, t, 1, nw.Gc, nw.gram_ld, nw.gram_row[n1], k);
    for (int l = 0; l < k; ++l) nw.rhs[nw.free_g[l]] -= c[l];
  }

  // Newton direction by blocks per target value plus a low-rank correction (Woodbury), as
  // fastpid/solver.py's _newton_system_lowrank, from lowrank_factor()'s factors: the
  // scaled Hessian is D + U diag(t2) U^T, D holding one (n1 + n2)-square block D_y per y and
  // U one column per cell c = (i, j) (entries aT at row i and bT at row n1 + j of each y);
  // K = diag(1 / t2) + U^T D^-1 U. Woodbury loses digits where D_y is ill-conditioned
  // (masses of 1e-13 next to O(1) ones): two steps of iterative refinement (one left some
  // tiny-mass problems at 40 instead of 18 iterations). Returns dec^2.
  FASTPID_HD double lowrank_direction() {
    const int n = (n1 + n2) * ny;
    double *r = nw.r, *x0 = nw.x0, *x = nw.x;
    for (int q = 0; q < n1 * ny; ++q) r[q] = nw.grad_f[q] * nw.sf[q];
    for (int q = 0; q < n2 * ny; ++q) r[n1 * ny + q] = nw.grad_g[q] * nw.sg[q];
    lowrank_solve(r, x);  // x = H^-1 r, then refined twice
    for (int step = 0; step < 2; ++step) {
      lowrank_residual(r, x, x0);  // x0 = r - H x
      lowrank_solve(x0, x0);
      FASTPID_SIMD()
      for (int k = 0; k < n; ++k) x[k] += x0[k];
    }
    refine_further(r, x);
    double dec2 = 0;
    for (int q = 0; q < n1 * ny; ++q) {
      df[q] = x[q] * nw.sf[q];
      dec2 += nw.grad_f[q] * df[q];
    }
    for (int q = 0; q < n2 * ny; ++q) {
      dg[q] = x[n1 * ny + q] * nw.sg[q];
      dec2 += nw.grad_g[q] * dg[q];
    }
    return dec2;
  }

  // ||r - H x|| / ||r|| with x0 = r - H x.
  FASTPID_HD double lowrank_relative_residual(const double* r, const double* x) {
    const int n = (n1 + n2) * ny;
    lowrank_residual(r, x, nw.x0);
    double rr = 0, rn = 0;
    for (int k = 0; k < n; ++k) {
      rr += nw.x0[k] * nw.x0[k];
      rn += r[k] * r[k];
    }
    return sqrt(rr) / fp_max(sqrt(rn), 1e-300);
  }

  // Where the refined Woodbury solution still leaves a relative residual above
  // kRefineResidual (barrier levels near mu's floor with masses of 1e-13: residuals of 1e2,
  // and Newton "directions" of negative decrement), up to kRefineMoreSteps more steps, keeping
  // the x of the smallest residual (fastpid/solver.py, _refine_further).
  FASTPID_HD void refine_further(const double* r, double* x) {
    const int n = (n1 + n2) * ny;
    double rel = lowrank_relative_residual(r, x);
    if (rel <= kRefineResidual) return;
    double best = rel == rel ? rel : HUGE_VAL;  // NaN: any finite residual is better
    copy(x, n, nw.xb);
    for (int step = 0; step < kRefineMoreSteps; ++step) {
      lowrank_solve(nw.x0, nw.x0);
      for (int k = 0; k < n; ++k) x[k] += nw.x0[k];
      rel = lowrank_relative_residual(r, x);
      if (rel < best) {
        best = rel;
        copy(x, n, nw.xb);
      }
    }
    copy(nw.xb, n, x);
  }

  // D_y^-1 (into nw.Dinv) of the m <= kLanes target values from y0, their factorisations
  // and inverses side by side (entry [p][q] of lane l at (p v + q) kLanes + l): every step is
  // one vector operation over the lanes, where one matrix at a time ran loops of v (v = n1 + n2
  // is small where this elimination is chosen). Each lane does the arithmetic of cholesky()
  // (unblocked) and cholesky_solve_many() with the identity, in their order; a lane with a
  // pivot that is not positive is built again with a 1e-12 ridge (the others as before), and
  // one that fails again gets the identity, as cholesky() does.
  FASTPID_HD void lowrank_inverses(int y0, int m) {
    const int v = n1 + n2, L = kLanes;
    double *A = nw.D, *Bm = nw.Dl;
    const double *diag = nw.ldiag, *cr = nw.lcross;
    bool ridge[kLanes] = {}, bad[kLanes] = {};
    for (int attempt = 0; attempt < 2; ++attempt) {
      fill(A, static_cast<size_t>(v) * v * L, 0.0);
      for (int l = 0; l < m; ++l) {
        const int y = y0 + l;
        for (int p = 0; p < v; ++p) A[(p * v + p) * L + l] = diag[p * ny + y] + (ridge[l] ? 1e-12 : 0.0);
        for (int i = 0; i < n1; ++i)
          for (int j = 0; j < n2; ++j) A[((n1 + j) * v + i) * L + l] = cr[(i * n2 + j) * ny + y];
      }
      for (int l = m; l < L; ++l)  // idle lanes: the identity
        for (int p = 0; p < v; ++p) A[(p * v + p) * L + l] = 1.0;
      for (int k = 0; k < v; ++k) {
        double* Akk = &A[(k * v + k) * L];
        double inv[kLanes];
        for (int l = 0; l < L; ++l) {
          bad[l] = bad[l] || !(Akk[l] > 0.0);
          Akk[l] = sqrt(Akk[l]);
          inv[l] = 1.0 / Akk[l];
        }
        for (int r = k + 1; r < v; ++r) {
          double* Ark = &A[(r * v + k) * L];
          FASTPID_SIMD()
          for (int l = 0; l < L; ++l) Ark[l] *= inv[l];
        }
        for (int r = k + 1; r < v; ++r) {
          const double* Ark = &A[(r * v + k) * L];
          for (int c = k + 1; c <= r; ++c) {
            const double* Ack = &A[(c * v + k) * L];
            double* Arc = &A[(r * v + c) * L];
            FASTPID_SIMD()
            for (int l = 0; l < L; ++l) Arc[l] -= Ark[l] * Ack[l];
          }
        }
      }
      bool again = false;  // only after the first attempt: the second has every ridge it needs
      for (int l = 0; l < m; ++l)
        if (bad[l] && !ridge[l]) again = ridge[l] = true;
      if (!again) break;
      for (int l = 0; l < L; ++l) bad[l] = false;
    }
    // The inverse: forward then backward substitution on the identity, lane by lane alike.
    fill(Bm, static_cast<size_t>(v) * v * L, 0.0);
    for (int p = 0; p < v; ++p)
      for (int l = 0; l < L; ++l) Bm[(p * v + p) * L + l] = 1.0;
    for (int r = 0; r < v; ++r) {
      double* Br = &Bm[static_cast<size_t>(r) * v * L];
      for (int p = 0; p < r; ++p) {
        const double* Lrp = &A[(r * v + p) * L];
        const double* Bp = &Bm[static_cast<size_t>(p) * v * L];
        for (int c = 0; c < v; ++c) {
          FASTPID_SIMD()
          for (int l = 0; l < L; ++l) Br[c * L + l] -= Lrp[l] * Bp[c * L + l];
        }
      }
      double inv[kLanes];
      for (int l = 0; l < L; ++l) inv[l] = 1.0 / A[(r * v + r) * L + l];
      for (int c = 0; c < v; ++c)
        for (int l = 0; l < L; ++l) Br[c * L + l] *= inv[l];
    }
    for (int r = v - 1; r >= 0; --r) {
      double* Br = &Bm[static_cast<size_t>(r) * v * L];
      double inv[kLanes];
      for (int l = 0; l < L; ++l) inv[l] = 1.0 / A[(r * v + r) * L + l];
      for (int c = 0; c < v; ++c)
        for (int l = 0; l < L; ++l) Br[c * L + l] *= inv[l];
      for (int p = 0; p < r; ++p) {
        const double* Lrp = &A[(r * v + p) * L];
        double* Bp = &Bm[static_cast<size_t>(p) * v * L];
        for (int c = 0; c < v; ++c) {
          FASTPID_SIMD()
          for (int l = 0; l < L; ++l) Bp[c * L + l] -= Lrp[l] * Br[c * L + l];
        }
      }
    }
    for (int l = 0; l < m; ++l) {
      double* Di = nw.Dinv + y0 + l;  // entry [p][q] at (p v + q) ny
      for (int pq = 0; pq < v * v; ++pq)  // not positive even with the ridge: the identity
        Di[static_cast<size_t>(pq) * ny] = bad[l] ? (pq % (v + 1) == 0 ? 1.0 : 0.0) : Bm[pq * L + l];
    }
  }

  // D_y^-1 of every y, U's entries, and K's scaled Cholesky factor. Every array of this
  // elimination has y innermost (D_y^-1's entry [p][q] at (p v + q) ny + y, U's at c ny + y,
  // the vectors' at p ny + y), so that each of its loops runs over the target values, long
  // where this elimination is chosen, in vector lanes (with y outermost, its loops ran over
  // n1, n2 or n1 + n2 entries, scalar).
  FASTPID_HD void lowrank_factor() {
    const int v = n1 + n2, C = n1 * n2;
    double *aT = nw.aT, *bT = nw.bT, *K = nw.K, *diag = nw.ldiag, *cr = nw.lcross;
    const double *sf = nw.sf, *sg = nw.sg, *W = nw.W;
    // D_y's diagonal at p = i is sf^2 sum_j R W over (i, j, y), at p = n1 + j sg^2 sum_i R W
    // (plus 1 on a fixed unknown); its entry at (n1 + j, i) is sf sg R W of cell (i, j); U's
    // entries are sf W (row i) and sg W (row n1 + j).
    fill(diag, static_cast<size_t>(v) * ny, 0.0);  // the sums first
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        const size_t c = static_cast<size_t>(i * n2 + j) * ny;
        const double r = R[i * n2 + j], *w = &W[c], *fi = &sf[i * ny], *gj = &sg[j * ny];
        double *di = &diag[i * ny], *dj = &diag[(n1 + j) * ny];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          const double t = r * w[y];
          di[y] += t;
          dj[y] += t;
          cr[c + y] = fi[y] * gj[y] * t;
          aT[c + y] = fi[y] * w[y];
          bT[c + y] = gj[y] * w[y];
        }
      }
    for (int q = 0; q < v * ny; ++q) {
      const int u = q < n1 * ny ? q : q - n1 * ny;  // the unknown's index in f or g
      const double s = q < n1 * ny ? sf[u] : sg[u];
      const bool fixed = q < n1 * ny ? fixed_f[u] : fixed_g[u];
      diag[q] = s * s * diag[q] + (fixed ? 1.0 : 0.0);
    }
    for (int y0 = 0; y0 < ny; y0 += kLanes) lowrank_inverses(y0, fp_min(kLanes, ny - y0));
    // Z_y[p][c'] = D_y^-1[p][i'] a_c' + D_y^-1[p][n1 + j'] b_c', then
    // K[c][c'] = sum_y a_c Z_y[i][c'] + b_c Z_y[n1 + j][c'] (lower triangle only). In this
    // association (that of the PyTorch solver) K keeps its digits when D_y is ill-conditioned;
    // contracting D_y^-1 with a_c, b_c first does not. Z is kept for lowrank_solve().
    const size_t n = ny;
    for (int p = 0; p < v; ++p)
      for (int cp = 0; cp < C; ++cp) {
        const double *d1 = &nw.Dinv[(p * v + cp / n2) * n], *d2 = &nw.Dinv[(p * v + n1 + cp % n2) * n];
        const double *ac = &aT[cp * n], *bc = &bT[cp * n];
        double* z = &nw.Z[(p * C + cp) * n];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) z[y] = d1[y] * ac[y] + d2[y] * bc[y];
      }
    cholesky(K, C, nw.chol, [&] {
      for (int c = 0; c < C; ++c) {
        const double *ac = &aT[c * n], *bc = &bT[c * n];
        const double *zi = &nw.Z[(c / n2) * C * n], *zj = &nw.Z[(n1 + c % n2) * C * n];
        for (int cp = 0; cp <= c; ++cp) {
          const double *zic = &zi[cp * n], *zjc = &zj[cp * n];
          double t = 0;
          FASTPID_SIMD(reduction(+ : t))
          for (int y = 0; y < ny; ++y) t += ac[y] * zic[y] + bc[y] * zjc[y];
          K[c * C + cp] = t;
        }
      }
      for (int c = 0; c < C; ++c) {
        double& kcc = K[static_cast<size_t>(c) * C + c];
        kcc += nw.oms[c] / R[c];  // 1 / t2
        nw.kd[c] = 1.0 / sqrt(fp_max(kcc, 1e-300));
        nw.t2[c] = R[c] / nw.oms[c];  // for lowrank_residual()
      }
      for (int c = 0; c < C; ++c)
        for (int cp = 0; cp <= c; ++cp) K[static_cast<size_t>(c) * C + cp] *= nw.kd[c] * nw.kd[cp];
    });
  }

  // uc[c] = scale[c] sum_y a_c[y] x[i][y] + b_c[y] x[n1 + j][y] (U^T x, scaled per cell).
  FASTPID_HD void lowrank_project(const double* x, const double* scale, double* uc) {
    for (int c = 0; c < n1 * n2; ++c) {
      const double *ac = &nw.aT[static_cast<size_t>(c) * ny], *bc = &nw.bT[static_cast<size_t>(c) * ny];
      const double *xi = &x[(c / n2) * ny], *xj = &x[(n1 + c % n2) * ny];
      double t = 0;
      FASTPID_SIMD(reduction(+ : t))
      for (int y = 0; y < ny; ++y) t += ac[y] * xi[y] + bc[y] * xj[y];
      uc[c] = t * scale[c];
    }
  }

  // out = H^-1 in (vectors v x ny; out may be in): D^-1 in - Z K^-1 U^T D^-1 in, with
  // Z z summed over the products D_y^-1[p][i] a_c z_c + D_y^-1[p][n1 + j] b_c z_c: summing U z
  // first and then applying D_y^-1 loses the digits that K keeps (see lowrank_factor).
  FASTPID_HD void lowrank_solve(const double* in, double* out) {
    const int v = n1 + n2, C = n1 * n2;
    const double* Dinv = nw.Dinv;
    double *x0 = nw.z, *uc = nw.uc;  // x0 apart from in and out
    for (int p = 0; p < v; ++p)  // x0 = D^-1 in
      sum_products(&x0[p * ny], &Dinv[static_cast<size_t>(p) * v * ny], ny, in, ny, v, ny);
    lowrank_project(x0, nw.kd, uc);  // kd U^T x0
    cholesky_solve(nw.K, C, uc);
    for (int c = 0; c < C; ++c) uc[c] *= nw.kd[c];
    for (int p = 0; p < v; ++p) {  // out = x0 - Z z (Z from lowrank_factor, which says why)
      double* op = &out[p * ny];  // in's row p is no longer read: it holds the sum first
      weighted_rows(op, uc, 1, &nw.Z[static_cast<size_t>(p) * C * ny], ny, C, ny);
      const double* xp = &x0[p * ny];
      FASTPID_SIMD()
      for (int y = 0; y < ny; ++y) op[y] = xp[y] - op[y];
    }
  }

  // res = r - H x, H = D + U diag(t2) U^T (D from its entries: its factor has replaced it).
  FASTPID_HD void lowrank_residual(const double* r, const double* x, double* res) {
    const int n = (n1 + n2) * ny;
    double* uc = nw.uc;
    lowrank_project(x, nw.t2, uc);
    FASTPID_SIMD()
    for (int q = 0; q < n; ++q) res[q] = r[q] - nw.ldiag[q] * x[q];
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        const int c = i * n2 + j;
        const double *cr = &nw.lcross[static_cast<size_t>(c) * ny], *ac = &nw.aT[static_cast<size_t>(c) * ny],
                     *bc = &nw.bT[static_cast<size_t>(c) * ny];
        const double *xi = &x[i * ny], *xj = &x[(n1 + j) * ny];
        double *ri = &res[i * ny], *rj = &res[(n1 + j) * ny];
        const double u = uc[c];
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          ri[y] -= cr[y] * xj[y] + ac[y] * u;
          rj[y] -= cr[y] * xi[y] + bc[y] * u;
        }
      }
  }

  // (df, dg) from yg = rhs and the kept blocks (the scaling undone); returns dec^2.
  FASTPID_HD double back_substitute() {
    const int m = n2 * ny;
    const double *rhs = nw.rhs, *sf = nw.sf, *sg = nw.sg;
    double* dy = nw.dy;
    double dec2 = 0;
    for (int q = 0; q < m; ++q) {
      dg[q] = rhs[q] * sg[q];
      dec2 += nw.grad_g[q] * dg[q];
    }
    if (opt.gram) return gram_back_substitute(dec2);
    // yf_i = xf_i - H_i^-1 C_i yg, C_i yg = sum_j a_j (w_j . yg_j) + d_j yg_j, by u_j = H_i^-1
    // a_j and H_i^-1.
    double* ay = nw.rhs_many;
    for (int i = 0; i < n1; ++i) {
      const double* ww = nw.w + static_cast<size_t>(i) * n2 * ny;
      const double* dd = nw.d + static_cast<size_t>(i) * n2 * ny;
      const double* uu = nw.u + static_cast<size_t>(i) * n2 * ny;
      double* yf = nw.xf + static_cast<size_t>(i) * ny;  // xf of this i, updated in place
      fill(dy, ny, 0.0);
      for (int j = 0; j < n2; ++j) {
        double wy = 0;
        for (int z = 0; z < ny; ++z) {
          wy += ww[j * ny + z] * rhs[j * ny + z];
          dy[z] += dd[j * ny + z] * rhs[j * ny + z];
        }
        for (int y = 0; y < ny; ++y) yf[y] -= uu[j * ny + y] * wy;
      }
      const double* hi = nw.Hinv + static_cast<size_t>(i) * ny * ny;
      for (int y = 0; y < ny; ++y) {
        double s = 0;
        for (int z = 0; z < ny; ++z) s += hi[y * ny + z] * dy[z];
        ay[y] = s;
      }
      // An int loop, not copy(): GCC 13 cannot rule out a negative ny converted to size_t
      // there and warns of an oversized memmove (-Wstringop-overflow).
      for (int y = 0; y < ny; ++y) dy[y] = ay[y];
      for (int y = 0; y < ny; ++y) {
        const int q = i * ny + y;
        df[q] = (yf[y] - dy[y]) * sf[q];
        dec2 += nw.grad_f[q] * df[q];
      }
    }
    return dec2;
  }

  // back_substitute()'s f part by the kept rows of G (see gram_reduce_rhs()): yf_i = H_i^-1
  // (rf_i - C_i yg) = L_i^-T (t_i - G_i yg), one pass over G's rows and one sweep with L_i^T
  // per i. dec2: the g part's.
  FASTPID_HD double gram_back_substitute(double dec2) {
    const int k = free_count, rows = nw.gram_row[n1], ld = nw.gram_ld;
    double *t = nw.gv, *yg = nw.gk;
    for (int l = 0; l < k; ++l) yg[l] = nw.rhs[nw.free_g[l]];
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    subtract_row_dots512(nw.Gc, ld, rows, yg, k, t);
#else
    for (int r = 0; r < rows; ++r) {
      const double* Gr = nw.Gc + static_cast<size_t>(r) * ld;
      double s = 0;
      FASTPID_SIMD(reduction(+ : s))
      for (int l = 0; l < k; ++l) s += Gr[l] * yg[l];
      t[r] -= s;
    }
#endif
    fill(df, static_cast<size_t>(n1) * ny, 0.0);  // fixed f unknowns
    for (int i = 0; i < n1; ++i) {
      const int r0 = nw.gram_row[i], nf = nw.gram_row[i + 1] - r0;
      cholesky_backward(nw.H + static_cast<size_t>(i) * ny * ny, nf, t + r0);  // t_i, then yf_i
      for (int r = r0; r < r0 + nf; ++r) {
        const int q = i * ny + nw.free_f[r];
        df[q] = t[r] * nw.sf[q];
        dec2 += nw.grad_f[q] * df[q];
      }
    }
    return dec2;
  }

  // The change of cell (i, j)'s s along the direction (df, dg), to first order (W of the
  // point the direction was computed at); with `curvature`, also the second-order change
  // sum_y W (df + dg)^2 / 2 there (see predict()).
  FASTPID_HD double change_of_s(int i, int j, double* curvature = nullptr) const {
    const int c = i * n2 + j;
    double ds = 0, q = 0;
    for (int y = 0; y < ny; ++y) {
      const double d = df[i * ny + y] + dg[j * ny + y];
      const double wd = nw.W[c * ny + y] * d;
      ds += wd;
      q += wd * d;
    }
    if (curvature) *curvature = 0.5 * q;
    return ds;
  }

  // change_of_s() of the n2 cells of x1 = i: ds[j], and curvature[j] unless null.
  FASTPID_HD void row_changes(int i, double* ds, double* curvature) const {
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    if (ny <= 16)
      return cell_changes512(nw.W + static_cast<size_t>(i) * n2 * ny, df + i * ny, dg, n2, ny, ds,
                             curvature);
#endif
    for (int j = 0; j < n2; ++j) ds[j] = change_of_s(i, j, curvature ? curvature + j : nullptr);
  }

  // The slacks' and multipliers' steps that go with (df, dg) from the linearised s + tau = 1
  // and R tau = mu + corr (fastpid/solver.py, _steps_to_target): dtau = rp - ds - soc (ds:
  // the change of s along the direction) and dR = (mu + corr - R tau - R dtau) / tau. Returns
  // the step lengths at which a slack, and a multiplier, would reach zero (HUGE_VAL: none).
  // `affine` (predict()'s step): dtau = rp - ds, and soc is set to each cell's second-order
  // change of s along the way (the same pass over the entries).
  FASTPID_HD StepLimits steps_to_target(double mu, bool affine = false) {
    // ds in dtau, for now (and with `affine` the curvature in soc).
    for (int i = 0; i < n1; ++i) row_changes(i, &dtau[i * n2], affine ? &soc[i * n2] : nullptr);
    if (affine) {
      FASTPID_SIMD()
      for (int c = 0; c < n1 * n2; ++c) soc[c] = pr.cell[c] ? soc[c] : 0.0;
    }
    // Then one pass over the cells (a cell without mass gets steps that nothing reads, and no
    // say in the length).
    double to_tau = HUGE_VAL, to_r = HUGE_VAL;
    const char* cell = pr.cell;
#if defined(__AVX512F__) && !defined(__CUDA_ARCH__)
    step_limits512(n1 * n2, cell, rp, soc, corr, R, tau, mu, affine, dtau, dR, to_tau, to_r);
#else
    FASTPID_SIMD(reduction(min : to_tau) reduction(min : to_r))
    for (int c = 0; c < n1 * n2; ++c) {
      const double dt = rp[c] - dtau[c] - (affine ? 0.0 : soc[c]);
      const double dr = (mu + corr[c] - R[c] * tau[c] - R[c] * dt) / tau[c];
      dtau[c] = dt;
      dR[c] = dr;
      to_tau = fp_min(to_tau, cell[c] && dt < 0 ? -tau[c] / dt : HUGE_VAL);
      to_r = fp_min(to_r, cell[c] && dr < 0 ? -R[c] / dr : HUGE_VAL);
    }
#endif
    return {to_tau, to_r};
  }

  // Mehrotra's predictor (fastpid/solver.py, _predict) from the factorised system: the affine
  // direction (target 0) and the mean complementarity its longest steps would reach (the
  // slacks' and the multipliers', each up to where one of them would reach zero), over
  // today's; returns the corrector's target (corrector_mu, at most `cap`, the last target or
  // the starting mu; `fallback` where the ratio is not finite) and sets two second-order terms
  // of the affine step: corr = -dR dtau, that of R tau, and soc, that of s (change_of_s(); s
  // is convex, and the linearised s + tau = 1 alone under-predicted it, so full steps left
  // s + tau > 1 and the next steps short), except at mu's floor (there they mislead more
  // steps than they help). Both are 0 on entry (barrier() clears them after every step).
  FASTPID_HD double predict(double fallback, double cap, double mu_floor) {
    const double now = mean_complementarity();
    solve_newton(0.0);
    const StepLimits to = steps_to_target(0.0, true);
    const double step = fp_min(1.0, to.tau), step_r = fp_min(1.0, to.R);
    double sum = 0;
    const char* cell = pr.cell;  // selects, not branches (see mean_complementarity())
    FASTPID_SIMD(reduction(+ : sum))
    for (int c = 0; c < n1 * n2; ++c) sum += cell[c] ? (R[c] + step_r * dR[c]) * (tau[c] + step * dtau[c]) : 0.0;
    const double ratio = sum / fp_max(pr.ncells, 1) / now;
    const bool finite = ratio >= 0.0 && ratio < HUGE_VAL;
    const double mu = finite ? fp_min(corrector_mu(now, ratio, mu_floor), cap) : fallback;
    if (finite && mu > mu_floor) {
      FASTPID_SIMD()
      for (int c = 0; c < n1 * n2; ++c) corr[c] = cell[c] ? -dR[c] * dtau[c] : 0.0;
    } else
      fill(soc, static_cast<size_t>(n1) * n2, 0.0);
    return mu;
  }

  // The primal-dual step along (df, dg) toward the target mu + corr (fastpid/solver.py,
  // _primal_dual_step): the slacks' and multipliers' steps of steps_to_target(); (f, g) and
  // the slacks move kFractionToBoundary of the way to where a slack would reach zero, at most
  // 1, and the multipliers likewise by their own length. Moves (f, g, ls, tau, R) and returns
  // the first length; 0 (nothing moves) where the
  // direction is not finite; -1 (nothing moves) where a barrier step must be taken instead: a
  // step shorter than kMinStep, no ascent (dec2 <= 0), or a point with a cell's log s above
  // kMaxLogS or not finite.
  FASTPID_HD double primal_dual_step(double mu, double dec2) {
    if (!isfinite(dec2)) return 0.0;
    const StepLimits to = steps_to_target(mu);
    const double alpha = fp_min(1.0, kFractionToBoundary * to.tau);
    const double alpha_r = fp_min(1.0, kFractionToBoundary * to.R);
    if (!(alpha > 0.0)) return 0.0;
    if (alpha < kMinStep || !(dec2 > 0.0)) return -1.0;
    for (int k = 0; k < n1 * ny; ++k) ft[k] = f[k] + alpha * df[k];
    for (int k = 0; k < n2 * ny; ++k) gt[k] = g[k] + alpha * dg[k];
    pr.log_s(ft, gt, lst);
    for (int c = 0; c < n1 * n2; ++c)
      if (pr.cell[c] && !(lst[c] <= kMaxLogS)) return -1.0;  // NaN fails too
    fp_swap(f, ft);
    fp_swap(g, gt);
    fp_swap(ls, lst);
    const char* cell = pr.cell;
    FASTPID_SIMD()
    for (int c = 0; c < n1 * n2; ++c) {
      tau[c] = cell[c] ? tau[c] + alpha * dtau[c] : tau[c];
      R[c] = cell[c] ? R[c] + alpha_r * dR[c] : R[c];
    }
    return alpha;
  }

  // The barrier step that stands in for a primal-dual step (fastpid/solver.py, _barrier_step):
  // from a point inside the domain max s < 1 (f shifted down if it is not), with the slacks at
  // 1 - s, the Newton direction of the barrier objective, a backtracking line search that
  // stays in the domain, and the multipliers' step; the slacks end at 1 - s of the new point.
  // Returns the step length (0: rejected).
  FASTPID_HD double barrier_step(double mu) {
    inside(false);
    const double dec2 = newton_direction(mu);
    const double alpha = line_search(mu, dec2);
    multiplier_step(mu, alpha);
    for (int c = 0; c < n1 * n2; ++c)
      if (pr.cell[c]) tau[c] = -expm1(ls[c]);
    return alpha;
  }

  // Backtracking (Armijo) step along (df, dg) that keeps max s < 1; moves (f, g, ls) to the
  // accepted point and returns the step length (0: rejected, nothing moves).
  FASTPID_HD double line_search(double mu, double dec2) {
    const double phi0 = barrier_value(ls, f, g, mu);
    const double slack = 1e-13 * (1.0 + fabs(phi0));
    double longest = 0.0;  // the direction's largest move of an admissible potential
    for (int k = 0; k < n1 * ny; ++k)
      if (pr.m1[k]) longest = fp_max(longest, fabs(df[k]));
    for (int k = 0; k < n2 * ny; ++k)
      if (pr.m2[k]) longest = fp_max(longest, fabs(dg[k]));
    double alpha = first_trial(longest);
    for (int h = 0; h < 60; ++h) {
      for (int k = 0; k < n1 * ny; ++k) ft[k] = f[k] + alpha * df[k];
      for (int k = 0; k < n2 * ny; ++k) gt[k] = g[k] + alpha * dg[k];
      pr.log_s(ft, gt, lst);
      if (barrier_value(lst, ft, gt, mu) >= phi0 + 0.01 * alpha * dec2 - slack) {
        fp_swap(f, ft);
        fp_swap(g, gt);
        fp_swap(ls, lst);
        return alpha;
      }
      alpha = shorter_step(alpha);
    }
    return 0.0;
  }

  // The multipliers after the barrier step (df, dg) (ls already at the new point): the full
  // primal-dual step of R (1 - s) = mu, dR = (mu - R t + R ds) / t with t = 1 - s at the old
  // point and ds the change of s along the direction, kept above 1% of R and within
  // [1/kKappa, kKappa] times mu / (1 - s) at the new point; a rejected step (alpha = 0) resets
  // R to mu / (1 - s) (fastpid/solver.py, _multiplier_step).
  FASTPID_HD void multiplier_step(double mu, double alpha) {
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        const int c = i * n2 + j;
        if (!pr.cell[c]) continue;
        const double ds = change_of_s(i, j);
        const double t = nw.oms[c], r = R[c];
        const double stepped = fp_max(r + (mu - r * t + r * ds) / t, 0.01 * r);
        const double centre = mu / -expm1(ls[c]);
        R[c] = alpha > 0 ? fp_min(fp_max(stepped, centre / kKappa), kKappa * centre) : centre;
      }
  }

  // The mean of R tau over the cells: the barrier parameter the iterate is at. Like the
  // barrier's other per-cell loops, a select on the cell's mask rather than a branch, so that
  // it vectorises (branching, it ran scalar: ~2 % of a sparse joint's solve in all); the sum's
  // order is then the vectoriser's.
  FASTPID_HD double mean_complementarity() const {
    double sum = 0;
    const char* cell = pr.cell;
    FASTPID_SIMD(reduction(+ : sum))
    for (int c = 0; c < n1 * n2; ++c) sum += cell[c] ? R[c] * tau[c] : 0.0;
    return sum / fp_max(pr.ncells, 1);
  }

  // Upper bound from the multipliers R (the primal estimate of the coupling's cell masses)
  // projected onto the constraints by Sinkhorn sweeps.
  // (Cells whose R is below shrink_below are scaled by kSupportShrink: see kSupportFactor.)
  FASTPID_HD double barrier_primal_bound(int sweeps, double shrink_below = 0.0) {
    for (int c = 0; c < n1 * n2; ++c) {
      const double r = R[c] < shrink_below ? kSupportShrink * R[c] : R[c];
      Kr[c] = pr.cell[c] ? r : 0.0;
      lr[c] = pr.cell[c] ? vlog(r) : kNegInf;
    }
    for (int k = 0; k < n2 * ny; ++k) gp[k] = pr.m2[k] ? g[k] : kNegInf;
    pr.row_update(lr, Kr, gp, fp);
    for (int s = 1; s < sweeps; ++s) {
      pr.col_update(lr, Kr, fp, gp);
      pr.row_update(lr, Kr, gp, fp);
    }
    pr.coupling(lr, fp, gp, Q);
    return pr.primal_bound(Q);
  }

  // (f, g), just reached along the Newton direction (df, dg), moved 2^k times that direction
  // further for k = 1, 2, ... (at most kExtrapolateDoublings) while the dual bound rises
  // (fastpid/solver.py, _extrapolate). Where a longer step raised it: the iterate moves there, shifted inside the
  // domain as the barrier starts (max s = exp(-1e-3)), with slacks 1 - s and multipliers at
  // their centre mu / (1 - s); lower takes the bound; true. Else nothing moves; false.
  // ft, gt, lst are free here (the step left the old point in them).
  FASTPID_HD bool extrapolate(double mu, double& lower) {
    double best = pr.dual_bound(f, g, ls), times = 0.0, k = 1.0;
    for (int h = 0; h < kExtrapolateDoublings; ++h) {
      k *= 2.0;
      for (int q = 0; q < n1 * ny; ++q) ft[q] = pr.m1[q] ? f[q] + k * df[q] : f[q];
      for (int q = 0; q < n2 * ny; ++q) gt[q] = pr.m2[q] ? g[q] + k * dg[q] : g[q];
      pr.log_s(ft, gt, lst);
      const double bound = pr.dual_bound(ft, gt, lst);
      if (!(bound > best)) break;
      best = bound;
      times = k;
    }
    if (times == 0.0) return false;
    for (int q = 0; q < n1 * ny; ++q) f[q] = pr.m1[q] ? f[q] + times * df[q] : f[q];
    for (int q = 0; q < n2 * ny; ++q) g[q] = pr.m2[q] ? g[q] + times * dg[q] : g[q];
    pr.log_s(f, g, ls);
    inside(true);
    for (int c = 0; c < n1 * n2; ++c)
      if (pr.cell[c]) R[c] = mu / tau[c];
    lower = fp_max(lower, best);
    return true;
  }

  // f lowered by max log s + kDomainMargin where max s reaches 1 (always: in any case), so
  // that max s = exp(-kDomainMargin) (fastpid/solver.py, _inside); ls (log s of (f, g) on
  // entry) follows, and the slacks tau = 1 - s of the cells.
  FASTPID_HD void inside(bool always) {
    double mx = kNegInf;
    for (int c = 0; c < n1 * n2; ++c)
      if (pr.cell[c]) mx = fp_max(mx, ls[c]);
    if (always || mx >= 0.0) {
      for (int q = 0; q < n1 * ny; ++q)
        if (pr.m1[q]) f[q] -= mx + kDomainMargin;
      pr.log_s(f, g, ls);
    }
    for (int c = 0; c < n1 * n2; ++c)
      if (pr.cell[c]) tau[c] = -expm1(ls[c]);
  }

  // Primal-dual path following (fastpid/solver.py, solve_exact): from a strictly feasible
  // point with multipliers from the alternation's mixture (at least mu / (1 - s)) and slacks
  // 1 - s cut towards mu / R (kSlackStartCut), one Newton step of the perturbed optimality
  // conditions per iteration, by Mehrotra's predictor-corrector after a primal-dual step (a
  // barrier step where that one is unfit, after which mu = mu_factor times the mean R tau).
  // ls holds log s of (f, g) on entry (run()); mu starts at gap0 (start_gap()) per cell.
  FASTPID_HD void barrier(double& lower, double& upper, int64_t& iterations, double gap0) {
    double mx = kNegInf;
    for (int c = 0; c < n1 * n2; ++c) mx = fp_max(mx, ls[c]);
    for (int k = 0; k < n1 * ny; ++k) f[k] = pr.m1[k] ? f[k] - mx - kDomainMargin : 0.0;
    for (int k = 0; k < n2 * ny; ++k) g[k] = pr.m2[k] ? g[k] : 0.0;
    pr.log_s(f, g, ls);  // from here on, ls is log s of the current (f, g)
    gauge_fix();
    const double ncells = fp_max(pr.ncells, 1);
    double mu = fp_max(gap0, opt.tol) / ncells;
    const double mu_floor = fp_max(0.05 * opt.tol / ncells, kMuMin);
    // The mixture R, scaled by f's shift (so that R W keeps its marginals), is the primal
    // estimate the alternation reached; mu / tau where that is smaller.
    for (int c = 0; c < n1 * n2; ++c) {
      tau[c] = pr.cell[c] ? -expm1(ls[c]) : 1.0;
      const double mixture = pr.cell[c] && isfinite(logR[c]) ? vexp(logR[c] + mx + kDomainMargin) : 0.0;
      R[c] = fp_max(mixture, mu / tau[c]);
      if (pr.cell[c]) tau[c] = fp_min(tau[c], fp_max(mu / R[c], kSlackStartCut * tau[c]));
      corr[c] = 0.0;
      soc[c] = 0.0;
    }
    int stalled = 0;
    int jumps = 0;  // extrapolations so far
    bool predictor = true;  // after a primal-dual step (or none yet)
    // The predictor never aims above the last step's target, nor the first step above the
    // starting mu (a start whose multipliers are far off centre while its gap is already near
    // tol had the first step aim hundreds of times higher, and peaked joints then stalled
    // short of tol). The starting mu also caps mu's rise (kMuRaise).
    double last_target = mu;
    const double mu_start = mu;
    bool floor_before = false;  // the last step was at mu's floor
    for (int it = 0; it < opt.max_iter && upper - lower > opt.tol && stalled < 5 && !opt.cancelled();
         ++it) {
      const double gap_before = upper - lower;
      factor_newton();
      if (predictor) mu = predict(mu, last_target, mu_floor);
      last_target = mu;
      double dec2 = solve_newton(mu);
      if (!isfinite(dec2) && predictor) {  // the predictor's terms overflowed by a vanishing slack
        fill(corr, static_cast<size_t>(n1) * n2, 0.0);
        fill(soc, static_cast<size_t>(n1) * n2, 0.0);
        dec2 = solve_newton(mu);
      }
      double alpha = primal_dual_step(mu, dec2);
      fill(corr, static_cast<size_t>(n1) * n2, 0.0);
      fill(soc, static_cast<size_t>(n1) * n2, 0.0);
      predictor = alpha >= 0.0;
      const bool barrier_taken = alpha < 0.0;
      if (barrier_taken) alpha = barrier_step(mu);
      ++iterations;
      lower = fp_max(lower, pr.dual_bound(f, g, ls));
      if (primal_bound_due(dec2, mu, mu_floor, ncells, opt.tol)) {
        improve_upper(upper, barrier_primal_bound(opt.polish_sweeps));
        // At mu's floor a tol below float64's reach needs a closer projection (see
        // kFloorPolishSweeps for when).
        const bool floor_polish = mu <= mu_floor && (centred(dec2, mu) || floor_before);
        if (floor_polish && upper - lower > opt.tol && opt.polish_sweeps < kFloorPolishSweeps)
          improve_upper(upper, barrier_primal_bound(kFloorPolishSweeps));
        if (floor_polish && upper - lower > opt.tol)
          improve_upper(upper, barrier_primal_bound(kFloorPolishSweeps, kSupportFactor * mu));
      }
      const double mu_now = mu;
      floor_before = mu_now <= mu_floor;
      if (barrier_taken && alpha < kMuRaiseStep)
        mu = fp_min(kMuRaise * mu, mu_start);
      else
        mu = next_mu(mu, mean_complementarity(), opt.mu_factor, mu_floor);
      // A problem whose tol is below what float64 can certify stops, with its honest gap,
      // once steps are refused or the bounds stop improving near a centre at mu's floor.
      bool stuck =
          alpha == 0.0 || (mu_now <= mu_floor && centred(dec2, mu_now) && upper - lower > 0.99 * gap_before);
      if (stuck && alpha > 0.0 && !barrier_taken && jumps < kExtrapolateMost && mu_floor > kMuMin &&
          extrapolate(mu_now, lower)) {
        ++jumps;
        stuck = false;
        predictor = false;  // the next step aims at mu itself, from the new centre
      }
      stalled = stuck ? stalled + 1 : 0;
    }
    // A solve stopped short (max_iter, a stall) gets its last iterate's bound as well: without
    // the alternation's (warm_bound_due()) it may have no primal bound but the closed forms'.
    if (upper - lower > opt.tol && !opt.cancelled()) improve_upper(upper, barrier_primal_bound(opt.polish_sweeps));
  }
};

}  // namespace detail

// solve_one() starts every array of its workspace a multiple of this many doubles (64 bytes)
// from the workspace's start, so that from a 64-byte aligned workspace (the CPU solver's) every
// array starts on a cache line and an AVX-512 vector's boundary (one core, AMD EPYC, per
// solve: 0.96-0.97x the time on 8x8x8 and 6x6x20, 0.98-0.99x on clustered 20x20x10, 1.00-1.03x
// on 12x12x6 and 40x40x6). The block GPU solver lays out its shared memory unpadded.
constexpr size_t kSolveAlign = 8;

// Doubles of scratch one problem needs (masks included, carved out of the same buffer), for
// the elimination (opt.lowrank), method (opt.newton) and assembly (opt.gram) it is solved with.
FASTPID_HD inline detail::Arena solve_workspace_count(int n1, int n2, int ny, bool lowrank, bool newton,
                                                      bool gram) {
  detail::Arena counter;  // no buffer: only counts
  counter.align = kSolveAlign;
  SolveOptions opt{};
  opt.lowrank = lowrank;
  opt.newton = newton;
  opt.gram = gram;
  const detail::Problem pr(n1, n2, ny, counter);
  const detail::Solver solver(pr, opt, counter);
  return counter;
}
FASTPID_HD inline size_t solve_workspace_doubles(int n1, int n2, int ny, bool lowrank = false,
                                                 bool newton = true, bool gram = false) {
  return solve_workspace_count(n1, n2, ny, lowrank, newton, gram).used;
}
// Whether the solver's int indices reach every entry of that workspace's arrays and of the
// problem (n1 n2 ny cells): a shape past them (2001 x 22 x 2001: H alone 8e9 entries) wrapped
// around and crashed the process.
FASTPID_HD inline bool solve_indexable(int n1, int n2, int ny, bool lowrank = false, bool newton = true,
                                       bool gram = false) {
  const size_t most = 2147483647;  // INT_MAX
  return detail::wide(n1) * n2 * ny <= most &&
         solve_workspace_count(n1, n2, ny, lowrank, newton, gram).largest <= most;
}

// Target values up to which the CPU solver assembles the Schur complement by the Gram product
// (SolveOptions::gram): it takes ny / 2 times the multiply-adds of the rank-structured update,
// at several times their rate (register tiles instead of short row passes). Measured per
// solve (Intel Xeon, AVX-512): 0.71-0.90x the time at ny = 3 to 8 on 16x16x4 to 40x40x6
// joints, neutral on 2x2x2 to 10x10x6, 0.8-0.9x (clustered 20x20x10) and 0.85-1.1x (dense
// 10x10x10) at ny = 10, 1.12-1.14x at ny = 12 to 16, 1.39x at ny = 28. AMD EPYC Zen 4
// (AVX-512 on 256-bit units): 0.93x on clustered 20x20x10 and 0.56-0.68x on the real digits
// and UCI joints (20 and 30 codes, ny = 10); 1.10x on clustered 20x20x12, 1.17x on Dirichlet
// 10x10x12, 1.24x on clustered 30x30x14, 1.39x on clustered 20x20x16, 1.47x on 12x12x16.
constexpr int kGramMaxNy = 10;

// Whether the CPU solver assembles by the Gram product (never in device code: the per-thread
// GPU solver's workspace leaves it out).
FASTPID_HD inline bool gram_suits(int ny, bool lowrank, bool newton) {
  return newton && !lowrank && ny <= kGramMaxNy;
}

// Whether the product form (Solver::product_form_factor: D' and the n2 pairs p_j, beta_j)
// fits in an f-block's ny^2 doubles.
FASTPID_HD inline bool product_form_fits(int n2, int ny) {
  return static_cast<int64_t>(2 * n2 + 1) * ny <= static_cast<int64_t>(ny) * ny;
}

// Whether the CPU solver factorises the f-blocks in product form (SolveOptions::product_form):
// with the Schur complement's rank-structured assembly, where x2 has at most a quarter as
// many values as y. Measured per solve against Cholesky (AMD EPYC, AVX2; 8 Dirichlet(1)
// joints per shape, the same iterations): 0.29x the time on 4x3x200, 0.50x on 20x5x101,
// 0.54x on 16x2x30, 0.59x on 10x3x50, 0.66x on 16x2x20, 0.75x on 16x2x12, 0.84x on 16x3x12
// and 16x5x30, 0.89x on 16x4x20, 0.95x on 8x4x16, ~1 on 10x10x50 (the Schur complement's own
// factorisation dominates there); ~1 to 1.09x above a quarter (16x4x12, 6x6x20, 16x8x20,
// 16x12x30, 10x20x50).
FASTPID_HD inline bool product_form_suits(int n2, int ny, bool lowrank, bool newton, bool gram) {
  return newton && !lowrank && !gram && 4 * n2 <= ny && product_form_fits(n2, ny);
}

// Doubles of scratch closed_forms_one() needs.
FASTPID_HD inline size_t closed_forms_workspace_doubles(int n1, int n2, int ny) {
  detail::Arena counter;
  const detail::Problem pr(n1, n2, ny, counter);
  return counter.used;
}

// The doubles of that workspace closed_forms_one() writes, which become resident: load() and
// closed_forms() touch p1y, la, logpy_rows (n1 ny each), p2y, lb, d2 (n2 ny), py, logpy, cell_sum
// and the byte masks m1, m2, cell, not the solver's scratch (constant sources: ~8 doubles a
// target value of the ~22 reserved). Kept in step with those two methods.
FASTPID_HD inline size_t closed_forms_resident_doubles(int n1, int n2, int ny) {
  const size_t a = detail::wide(n1) * ny, b = detail::wide(n2) * ny, c = detail::wide(n1) * n2;
  return 3 * (a + b) + 2 * detail::wide(ny) + c + (a + b + c + 7) / 8;
}

// out[0..3] = I(X1,X2;Y), I(X1;Y), I(X2;Y) and I_Q0(Y; X1,X2) of the proxy coupling of one
// problem P[n1][n2][ny] (normalised, C order), using `work` (closed_forms_workspace_doubles).
FASTPID_HD inline void closed_forms_one(const double* P, int n1, int n2, int ny, double* work, double* out) {
  detail::Arena arena;
  arena.base = work;
  detail::Problem pr(n1, n2, ny, arena);
  pr.load(P);
  pr.closed_forms(out[0], out[1], out[2], out[3]);
}

// The upper bound Problem::primal_bound() takes from a coupling Q[n1][n2][ny] of the problem
// P[n1][n2][ny] (normalised, C order): I of Q's feasible rounding (Q is overwritten), +inf for
// a Q with a NaN or infinite admissible entry; `work` as for closed_forms_one().
FASTPID_HD inline double primal_bound_one(const double* P, double* Q, int n1, int n2, int ny, double* work) {
  detail::Arena arena;
  arena.base = work;
  detail::Problem pr(n1, n2, ny, arena);
  pr.load(P);
  return pr.primal_bound(Q);
}

// Solve one problem P[n1][n2][ny] (normalised, C order) using `work` (solve_workspace_doubles
// doubles, any contents, 8-byte aligned). Writes *lower, *upper, *iterations and f[n1*ny],
// g[n2*ny] with -inf on masked entries; and, unless coupling is null, coupling[n1*n2*ny]: an
// exactly feasible coupling whose I(Y; X1, X2) is the best primal value found (the upper
// bound, unless that is the closed-form I1 + I2); and, unless closed is null, closed[4]: the
// closed forms of closed_forms_one(), computed on the way.
FASTPID_HD inline void solve_one(const double* P, int n1, int n2, int ny, const SolveOptions& opt,
                                 double* work, double* lower, double* upper, double* f, double* g,
                                 int64_t* iterations, double* coupling = nullptr, double* closed = nullptr) {
  detail::Arena arena;
  arena.base = work;
  arena.align = kSolveAlign;
  detail::Problem pr(n1, n2, ny, arena);
  detail::Solver solver(pr, opt, arena);
  solver.best_q = coupling;
  pr.load(P);
  solver.run(*lower, *upper, *iterations, closed);
  for (int k = 0; k < n1 * ny; ++k) f[k] = pr.m1[k] ? solver.f[k] : detail::kNegInf;
  for (int k = 0; k < n2 * ny; ++k) g[k] = pr.m2[k] ? solver.g[k] : detail::kNegInf;
}

}  // namespace fastpid

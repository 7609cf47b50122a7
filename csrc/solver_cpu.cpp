// C++ CPU solver: the per-problem solver of solver_core.hpp over a batch, one problem at a
// time per thread, so that the batch is spread over threads with no synchronisation.
#include "solver_cpu.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastpid {

namespace {

// Workspaces up to this many doubles (16 MB) stay with their thread for the next call.
constexpr size_t kKeptDoubles = size_t(1) << 21;

// Scratch of n doubles (uninitialised) for the calling thread. A fresh zeroed allocation per
// call took 6-11 us for the 0.8-1.4 MB of 20x20x10 to 40x40x6 joints (34 us for 20x20x28's
// 4 MB), plus page faults where the allocator maps new pages; so a thread keeps its
// workspace for later calls, up to kKeptDoubles (larger ones are freed after the call).
class Workspace {
 public:
  explicit Workspace(size_t n) {
    thread_local std::unique_ptr<double[]> kept;
    thread_local size_t kept_size = 0;
    if (n > kKeptDoubles) {
      own_.reset(new double[n + kSolveAlign - 1]);
      data_ = aligned(own_.get());
      return;
    }
    if (kept_size < n) {
      kept.reset();  // before the new one: never both at once
      kept.reset(new double[n + kSolveAlign - 1]);
      kept_size = n;
    }
    data_ = aligned(kept.get());
  }
  double* data() const { return data_; }

 private:
  // The first boundary of kSolveAlign doubles in p's first kSolveAlign doubles.
  static double* aligned(double* p) {
    constexpr uintptr_t bytes = kSolveAlign * sizeof(double);
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    return reinterpret_cast<double*>((a + bytes - 1) & ~(bytes - 1));
  }
  std::unique_ptr<double[]> own_;
  double* data_;
};

// The closed-form bracket max(I1, I2) <= V <= min(I_Q0, I12, I1 + I2) of closed forms cf =
// (I(X1,X2;Y), I(X1;Y), I(X2;Y), I_Q0).
double closed_lower(const double* cf) { return std::max(cf[1], cf[2]); }
double closed_upper(const double* cf) { return std::min(std::min(cf[3], cf[0]), cf[1] + cf[2]); }

// The terms, gap and broken of one problem (pid_terms_batch()) from its closed forms cf and
// the solver's bracket lo <= V <= up, V its midpoint (an exact solve's) or, at_upper, up (a
// feasible coupling's I: a fast solve's, the proxy's); terms[k * stride] is term k.
void bracket_terms(const double* cf, double lo, double up, bool at_upper, double scale, double* terms,
                   int64_t stride, double* gap, bool* broken) {
  const double mi = cf[0], mi1 = cf[1], mi2 = cf[2];
  const double lower0 = closed_lower(cf), upper0 = closed_upper(cf);
  double value = at_upper ? up : 0.5 * (lo + up);
  // A valid bracket: both bounds finite and not crossed beyond rounding (then swapped).
  const bool ok = std::fabs(lo) < INFINITY && std::fabs(up) < INFINITY &&
                  lo <= up + 1e-12 * (1.0 + std::fabs(upper0));
  const double l = ok ? std::min(lo, up) : lower0, u = ok ? std::max(lo, up) : upper0;
  if (!ok) value = 0.5 * (lower0 + upper0);
  // Every term >= 0. The upper end is tested first, as fastpid.api._within does: where rounding
  // crosses the closed-form bracket (X2 independent of (X1, Y): I_Q0 = I1 to rounding), V is
  // lower0 on both routes.
  value = value > upper0 ? upper0 : (value < lower0 ? lower0 : value);
  const double t[7] = {mi1 + mi2 - value, value - mi2, value - mi1, mi - value, mi, mi1, mi2};
  for (int k = 0; k < 7; ++k) {
    const double x = std::max(t[k], 0.0);
    terms[k * stride] = scale == 1.0 ? x : x * scale;
  }
  // Crossed only where the closed forms' rounding crosses their own bracket (X2 independent of
  // (X1, Y): I_Q0 = I(X1;Y) but for an ulp on about half of such joints): the gap is then by
  // how much, never negative.
  *gap = std::fabs(u - l);
  *broken = !ok;
}

// A process forked from one whose OpenMP threads have run cannot use them: GNU libgomp's
// thread pool hangs the child's next parallel region, ours or torch's, which share the library
// (a multiprocessing worker forked after a batched solve never returned). So a child forked
// once this module is loaded runs every loop here on its own thread, outside OpenMP (whether
// the parent's pool ran, for torch's work, is not known here). Where the forking thread has
// run a team of this module's (libgomp keeps a pool per thread that starts teams), the
// child's OpenMP threads are also set to 1, so that torch's parallel regions run on the
// calling thread too: a forked child's next large torch reduction had hung for good
// (torch.set_num_threads(n > 1) in the child brings that back, as after a parallel torch
// operation in the parent).
std::atomic<bool> forked_child{false};
thread_local bool team_started = false;

void note_team() {
#ifdef _OPENMP
  if (omp_get_max_threads() > 1) team_started = true;  // a team of one makes no pool
#endif
}

#if defined(__unix__) || defined(__APPLE__)
const int fork_handler = pthread_atfork(nullptr, nullptr, [] {
  forked_child = true;
#ifdef _OPENMP
  if (team_started) omp_set_num_threads(1);  // the forking thread's setting, its pool's
#endif
});
#endif

// A thread's workspace of n doubles, or none with `failed` set where it cannot be allocated:
// an exception cannot leave an OpenMP region (the runtime terminates the process: a batch
// whose workspaces did not fit under a ulimit -v killed Python), so the regions below let
// every thread meet their loop and throw std::bad_alloc (MemoryError in Python) after it.
std::unique_ptr<Workspace> workspace_or_flag(size_t n, std::atomic<bool>& failed) {
  try {
    return std::make_unique<Workspace>(n);
  } catch (const std::bad_alloc&) {
    failed = true;
    return nullptr;
  }
}

// body(b, work) for every problem b < B, whole problems spread over the threads (dynamic:
// solves differ in length), each thread with one workspace of work_doubles for all its
// problems. One problem: no team of threads, which cost 35-80 us per call (one 3x3x3 problem:
// 64-108 us with a team of two, 29 us without) while the others only set up their workspaces.
template <class Body>
void for_each_problem(int64_t B, size_t work_doubles, Body body) {
  if (B == 1 || forked_child) {
    const Workspace work(work_doubles);
    for (int64_t b = 0; b < B; ++b) body(b, work.data());
    return;
  }
  note_team();
  std::atomic<bool> short_of_memory{false};
#pragma omp parallel
  {
    const auto work = workspace_or_flag(work_doubles, short_of_memory);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b)
      if (work && !short_of_memory) body(b, work->data());
  }
  if (short_of_memory) throw std::bad_alloc();
}

}  // namespace

void check_indexable(int n1, int n2, int ny, bool lowrank, bool newton, bool gram) {
  if (!solve_indexable(n1, n2, ny, lowrank, newton, gram))
    throw std::length_error(
        "problems of " + std::to_string(n1) + "x" + std::to_string(n2) + "x" + std::to_string(ny) +
        " are too large for the C++ solver, which indexes its arrays with 32-bit integers (at most 2^31 - 1 "
        "entries each); drop or merge values of X1, X2 or Y");
}

void solve_batch(const double* P, int64_t B, int n1, int n2, int ny, const SolveOptions& opt,
                 double* lower, double* upper, double* f, double* g, int64_t* iterations,
                 double* coupling) {
  check_indexable(n1, n2, ny, opt.lowrank, opt.newton, opt.gram);
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  const size_t work_doubles = solve_workspace_doubles(n1, n2, ny, opt.lowrank, opt.newton, opt.gram);
  for_each_problem(B, work_doubles, [&](int64_t b, double* work) {
    solve_one(P + b * cells, n1, n2, ny, opt, work, lower + b, upper + b, f + b * n1 * ny,
              g + b * n2 * ny, iterations + b, coupling ? coupling + b * cells : nullptr);
  });
}

void closed_forms_batch(const double* P, int64_t B, int n1, int n2, int ny, double* out) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  const size_t work_doubles = closed_forms_workspace_doubles(n1, n2, ny);
  const bool team = B * cells > (int64_t(1) << 16) && !forked_child;
  if (team) note_team();
  std::atomic<bool> short_of_memory{false};
#pragma omp parallel if (team)
  {
    const auto work = workspace_or_flag(work_doubles, short_of_memory);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b)
      if (work && !short_of_memory) closed_forms_one(P + b * cells, n1, n2, ny, work->data(), out + 4 * b);
  }
  if (short_of_memory) throw std::bad_alloc();
}

void primal_bound_batch(const double* P, const double* Q, int64_t B, int n1, int n2, int ny, double* out) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  const size_t work_doubles = closed_forms_workspace_doubles(n1, n2, ny);
  const Workspace work(work_doubles + cells);
  double* q = work.data() + work_doubles;  // Q[b], which the bound overwrites
  for (int64_t b = 0; b < B; ++b) {
    std::copy(Q + b * cells, Q + (b + 1) * cells, q);
    out[b] = primal_bound_one(P + b * cells, q, n1, n2, ny, work.data());
  }
}

void pid_terms_batch(const double* P, int64_t B, int n1, int n2, int ny, const double* lower,
                     const double* upper, bool at_upper, double scale, double* terms, double* gap,
                     bool* broken) {
  std::vector<double> cf(4 * B);
  closed_forms_batch(P, B, n1, n2, ny, cf.data());
  for (int64_t b = 0; b < B; ++b)
    bracket_terms(&cf[4 * b], lower[b], upper[b], at_upper, scale, terms + b, B, gap + b, broken + b);
}

void proxy_pid_batch(const double* P, int64_t B, int n1, int n2, int ny, double scale, double* terms,
                     double* gap, bool* broken) {
  std::vector<double> cf(4 * B);
  closed_forms_batch(P, B, n1, n2, ny, cf.data());
  for (int64_t b = 0; b < B; ++b) {
    const double* c = &cf[4 * b];
    bracket_terms(c, closed_lower(c), closed_upper(c), true, scale, terms + b, B, gap + b, broken + b);
  }
}

bool prepare_batch(const double* P, int64_t B, int n1, int n2, int ny, double negligible,
                   double* out, int64_t* free1, int64_t* free2, double* dropped, unsigned char* seen) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  std::vector<unsigned char> mass1(static_cast<size_t>(n1) * ny), mass2(static_cast<size_t>(n2) * ny);
  for (int64_t b = 0; b < B; ++b) {
    const double* p = P + b * cells;
    const double t = detail::long_sum(p, static_cast<size_t>(cells));
    if (!(t > 0.0 && t < INFINITY)) return false;  // NaN fails too
    std::fill(mass1.begin(), mass1.end(), 0);
    std::fill(mass2.begin(), mass2.end(), 0);
    double* q = out + b * cells;
    // The divisions and the counts of invalid (negative, NaN) and negligible masses in one
    // vector loop (with the early return inside it, a scalar division per entry).
    int64_t invalid = 0, small = 0;
    FASTPID_SIMD(reduction(+ : invalid, small))
    for (int64_t k = 0; k < cells; ++k) {
      const double x = p[k] / t;
      q[k] = x;
      invalid += !(x >= 0.0);  // NaN counts too
      small += x > 0.0 && x < negligible;
    }
    if (invalid) return false;
    double eps = 0.0;  // the negligible masses, dropped (fastpid._certify.drop_negligible)
    if (small)
      for (int64_t k = 0; k < cells; ++k) {
        const bool tiny = q[k] > 0.0 && q[k] < negligible;
        eps += tiny ? q[k] : 0.0;
        q[k] = tiny ? 0.0 : q[k];
      }
    dropped[b] = eps;
    if (eps > 0.0) {  // renormalised, as the general route does
      const double kept = detail::long_sum(q, static_cast<size_t>(cells));
      for (int64_t k = 0; k < cells; ++k) q[k] /= kept;
    }
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        FASTPID_SIMD()
        for (int y = 0; y < ny; ++y) {
          const bool mass = q[(static_cast<int64_t>(i) * n2 + j) * ny + y] > 0.0;
          mass1[i * ny + y] |= mass;
          mass2[j * ny + y] |= mass;
        }
    free1[b] = std::count(mass1.begin(), mass1.end(), 1);
    free2[b] = std::count(mass2.begin(), mass2.end(), 1);
    for (int i = 0; i < n1; ++i)
      for (int y = 0; y < ny; ++y)
        if (mass1[i * ny + y]) seen[i] = seen[n1 + n2 + y] = 1;
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y)
        if (mass2[j * ny + y]) seen[n1 + j] = 1;
  }
  return true;
}

void solve_pid_batch(const double* P, int64_t B, int n1, int n2, int ny, const bool* swap,
                     const SolveOptions& opt, double scale, double* terms, double* gap,
                     bool* broken, int64_t* iterations) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  bool plain = false, swapped = false;
  for (int64_t b = 0; b < B; ++b) (swap[b] ? swapped : plain) = true;
  // Scratch of the orientations present, then f and g (not returned), then the transposed
  // joint of a swapped problem. The closed forms come from the solve, which starts from them
  // (computing them again took 9 us of 8x8x8's ~340, 40 us of clustered 20x20x10's ~2.8 ms).
  if (plain) check_indexable(n1, n2, ny, opt.lowrank, opt.newton, opt.gram);
  if (swapped) check_indexable(n2, n1, ny, opt.lowrank, opt.newton, opt.gram);
  size_t solve_doubles = 0;
  if (plain) solve_doubles = solve_workspace_doubles(n1, n2, ny, opt.lowrank, opt.newton, opt.gram);
  if (swapped)
    solve_doubles = std::max(solve_doubles, solve_workspace_doubles(n2, n1, ny, opt.lowrank, opt.newton, opt.gram));
  const size_t fg = static_cast<size_t>(n1 + n2) * ny;
  // The f-blocks' factorisation suits the second source's size, which the swap changes.
  SolveOptions plain_opt = opt, swapped_opt = opt;
  plain_opt.product_form = product_form_suits(n2, ny, opt.lowrank, opt.newton, opt.gram);
  swapped_opt.product_form = product_form_suits(n1, ny, opt.lowrank, opt.newton, opt.gram);
  for_each_problem(B, solve_doubles + fg + (swapped ? cells : 0), [&](int64_t b, double* w) {
    const double* p = P + b * cells;
    double* f = w + solve_doubles;
    double lo, up, cf[4];
    if (swap[b]) {
      double* pt = f + fg;  // pt[j][i][y] = p[i][j][y]
      for (int i = 0; i < n1; ++i)
        for (int j = 0; j < n2; ++j)
          std::copy(p + (static_cast<int64_t>(i) * n2 + j) * ny, p + (static_cast<int64_t>(i) * n2 + j + 1) * ny,
                    pt + (static_cast<int64_t>(j) * n1 + i) * ny);
      solve_one(pt, n2, n1, ny, swapped_opt, w, &lo, &up, f, f + static_cast<size_t>(n2) * ny, iterations + b,
                nullptr, cf);
      std::swap(cf[1], cf[2]);  // I(X1;Y) and I(X2;Y) back in P's order
    } else {
      solve_one(p, n1, n2, ny, plain_opt, w, &lo, &up, f, f + static_cast<size_t>(n1) * ny, iterations + b,
                nullptr, cf);
    }
    bracket_terms(cf, lo, up, !opt.newton, scale, terms + b, B, gap + b, broken + b);
  });
}

}  // namespace fastpid

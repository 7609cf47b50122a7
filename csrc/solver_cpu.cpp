// C++ CPU solver: the per-problem solver of solver_core.hpp over a batch, one problem at a
// time per thread, so that the batch is spread over threads with no synchronisation; a
// batch of fewer problems than threads, each large, is solved one problem after the other
// with all threads inside each (SolveOptions::threads).
#include "solver_cpu.hpp"

#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastpid {

void solve_batch(const double* P, int64_t B, int n1, int n2, int ny, const SolveOptions& opt,
                 double* lower, double* upper, double* f, double* g, int64_t* iterations,
                 double* coupling) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  const int threads = inner_threads(B, n1, n2, ny, opt);
  if (threads > 1) {  // few large problems: one after the other, each on all threads
    SolveOptions inner = opt;
    inner.threads = threads;
    std::vector<double> work(solve_workspace_doubles(n1, n2, ny, opt.lowrank, opt.newton, threads));
    for (int64_t b = 0; b < B; ++b)
      solve_one(P + b * cells, n1, n2, ny, inner, work.data(), lower + b, upper + b,
                f + b * n1 * ny, g + b * n2 * ny, iterations + b,
                coupling ? coupling + b * cells : nullptr);
    return;
  }
  const size_t work_doubles = solve_workspace_doubles(n1, n2, ny, opt.lowrank, opt.newton);
#pragma omp parallel
  {
    std::vector<double> work(work_doubles);  // one per thread, reused for all its problems
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b)
      solve_one(P + b * cells, n1, n2, ny, opt, work.data(), lower + b, upper + b,
                f + b * n1 * ny, g + b * n2 * ny, iterations + b,
                coupling ? coupling + b * cells : nullptr);
  }
}

int inner_threads(int64_t B, int n1, int n2, int ny, const SolveOptions& opt) {
#ifdef _OPENMP
  const int available = omp_get_max_threads();
#else
  const int available = 1;
#endif
  const int64_t system = opt.lowrank ? int64_t(n1) * n2 : int64_t(n2) * ny;
  const bool large = opt.newton && system >= kInnerThreadsFrom;
  return B < available && large ? available : 1;
}

void closed_forms_batch(const double* P, int64_t B, int n1, int n2, int ny, double* out) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  const size_t work_doubles = closed_forms_workspace_doubles(n1, n2, ny);
#pragma omp parallel if (B * cells > (int64_t(1) << 16))
  {
    std::vector<double> work(work_doubles);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) closed_forms_one(P + b * cells, n1, n2, ny, work.data(), out + 4 * b);
  }
}

}  // namespace fastpid

// C++ CPU solver: the per-problem solver of solver_core.hpp over a batch, one problem at a
// time per thread, so that the batch is spread over threads with no synchronisation.
#include "solver_cpu.hpp"

#include <vector>

namespace fastpid {

void solve_batch(const double* P, int64_t B, int n1, int n2, int ny, const SolveOptions& opt,
                 double* lower, double* upper, double* f, double* g, int64_t* iterations,
                 double* coupling) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
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

// The exact solver with one problem per thread: the C++ CPU solver's sequential code
// (solver_core.hpp), for problems whose workspace does not fit a block's shared memory.
#include <cuda_runtime.h>

#include "internal.hpp"
#include "solver_core.hpp"

namespace fastpid::cuda {
namespace {

// Problems per block: one warp. The kernel takes 255 registers a thread, so an SM holds 8
// warps whatever the block size; one-warp blocks spread a batch over the most SMs (on the
// H200, 1,000 20x20x10 problems in 64-thread blocks were 16 blocks, on at most 16 of its 132
// SMs: 402 problems/s).
constexpr int kSolveThreads = 32;

// One problem per thread: the same sequential code as the C++ CPU solver.
__global__ void solve_kernel(int64_t B, const double* P, int n1, int n2, int ny,
                             fastpid::SolveOptions opt, double* work, int64_t work_per,
                             double* lower, double* upper, double* f, double* g,
                             int64_t* iterations) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  fastpid::solve_one(P + b * n1 * n2 * ny, n1, n2, ny, opt, work + b * work_per, lower + b,
                     upper + b, f + b * n1 * ny, g + b * n2 * ny, iterations + b);
}

}  // namespace

const char* solve_threads(int64_t B, const double* P, int n1, int n2, int ny,
                          const fastpid::SolveOptions& opt, double* work, double* lower,
                          double* upper, double* f, double* g, int64_t* iterations,
                          uintptr_t stream) {
  const unsigned blocks = static_cast<unsigned>((B + kSolveThreads - 1) / kSolveThreads);
  solve_kernel<<<blocks, kSolveThreads, 0, as_stream(stream)>>>(
      B, P, n1, n2, ny, opt, work,
      static_cast<int64_t>(fastpid::solve_workspace_doubles(n1, n2, ny)), lower, upper, f, g,
      iterations);
  return launched();
}

}  // namespace fastpid::cuda

// Shared by the .cu files (kernels.cu, solve_block.cu, solve_thread.cu): CUDA errors as text
// (nullptr: none), streams from torch's handles, grid sizes, and the exact solvers' launchers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "solver_core.hpp"

namespace fastpid::cuda {

inline const char* check(cudaError_t e) { return e == cudaSuccess ? nullptr : cudaGetErrorString(e); }

// The launch's own error (bad configuration) or none; faults inside a kernel surface at the
// next synchronising call, as with any asynchronous CUDA work.
inline const char* launched() { return check(cudaGetLastError()); }

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Blocks of `threads` for `items`, at least 1 and at most 2^20 (kernels stride over the rest).
inline unsigned grid_for(int64_t items, int threads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (1 << 20) ? (1 << 20) : blocks));
}

// The two exact solvers, each in its own file so that the compiler builds them in parallel
// (ptxas takes most of a CUDA build, the most on the one-problem-per-thread solver).
// solve_block.cu: one problem per thread block, its workspace in shared memory.
const char* block_solver_fits(int n1, int n2, int ny, bool* fits);
const char* solve_blocks(int64_t B, const double* P, int n1, int n2, int ny,
                         const fastpid::SolveOptions& opt, double* lower, double* upper, double* f,
                         double* g, int64_t* iterations, uintptr_t stream);
// solve_thread.cu: one problem per thread, `work` (solve_workspace_doubles each) as scratch.
const char* solve_threads(int64_t B, const double* P, int n1, int n2, int ny,
                          const fastpid::SolveOptions& opt, double* work, double* lower,
                          double* upper, double* f, double* g, int64_t* iterations,
                          uintptr_t stream);

}  // namespace fastpid::cuda

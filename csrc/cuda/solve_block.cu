// The exact solver with one problem per thread block, its workspace in shared memory
// (solver_block.hpp); solve() in kernels.cu picks it where that workspace fits.
#include <cuda_runtime.h>

#include "internal.hpp"
#include "solver_block.hpp"

namespace fastpid::cuda {
namespace {

constexpr int kReduceSlots = 32;  // doubles of the block solver's shared memory for CudaBlock

// Bytes of dynamic shared memory of the block solver: the reduction slots, then its workspace.
int64_t block_solver_bytes(int n1, int n2, int ny) {
  return (kReduceSlots + solve_block_work(n1, n2, ny)) * static_cast<int64_t>(sizeof(double));
}

// Threads of the block solver. Its widest phases with most work are the n2 ny rows of the
// Schur complement (assembly, then the trailing rows of each Cholesky column); two warps
// cover them up to 64 rows, four beyond, where fewer would each carry several long rows.
int block_solver_threads(int n2, int ny) { return n2 * ny > 64 ? 128 : 64; }

// One problem per thread block, its workspace in shared memory; blocks stride over the batch.
__global__ void solve_block_kernel(int64_t B, const double* P, int n1, int n2, int ny,
                                   fastpid::SolveOptions opt, double* lower, double* upper,
                                   double* f, double* g, int64_t* iterations) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  double* shared = reinterpret_cast<double*>(shared_bytes);
  const CudaBlock b{shared};
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  for (int64_t p = blockIdx.x; p < B; p += gridDim.x) {
    solve_block_body(b, P + p * cells, n1, n2, ny, opt, shared + kReduceSlots, lower + p,
                     upper + p, f + p * n1 * ny, g + p * n2 * ny, iterations + p);
    b.sync();  // the next problem overwrites the shared workspace
  }
}

}  // namespace

// Whether the block solver fits the current device's shared memory per block (its opt-in
// limit: 227 KB on an H100).
const char* block_solver_fits(int n1, int n2, int ny, bool* fits) {
  int device = 0, limit = 0;
  if (const char* error = check(cudaGetDevice(&device))) return error;
  if (const char* error = check(
          cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)))
    return error;
  *fits = block_solver_bytes(n1, n2, ny) <= limit;
  return nullptr;
}

const char* solve_blocks(int64_t B, const double* P, int n1, int n2, int ny,
                         const fastpid::SolveOptions& opt, double* lower, double* upper, double* f,
                         double* g, int64_t* iterations, uintptr_t stream) {
  const int64_t bytes = block_solver_bytes(n1, n2, ny);
  if (const char* error = check(cudaFuncSetAttribute(solve_block_kernel,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     static_cast<int>(bytes))))
    return error;
  solve_block_kernel<<<grid_for(B, 1), block_solver_threads(n2, ny), bytes, as_stream(stream)>>>(
      B, P, n1, n2, ny, opt, lower, upper, f, g, iterations);
  return launched();
}

}  // namespace fastpid::cuda

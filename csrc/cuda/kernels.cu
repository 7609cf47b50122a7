// CUDA kernels: thin wrappers that place each thread block on its problem and run the bodies
// of kernels.hpp; the launchers of launch.hpp check every CUDA call. The exact solver's kernels
// are in solve_block.cu and solve_thread.cu.
#include <cuda_runtime.h>

#include "internal.hpp"
#include "kernels.hpp"
#include "launch.hpp"
#include "solver_core.hpp"

namespace fastpid::cuda {
namespace {

// Dynamic shared memory a block may take without an opt-in: 48 KB for static and dynamic
// together, less the 32 reduction slots a CudaBlock declares statically.
constexpr int kSharedLimit = 48 * 1024 - 32 * static_cast<int>(sizeof(double));
constexpr int kJointThreads = 256;
constexpr unsigned kJointPrivateBlocks = 1024;  // grid cap of the private-histogram joints

// Threads per problem block: enough for the largest phase, whole warps, at most 256.
int block_threads(int n1, int n2, int ny) {
  int64_t widest = static_cast<int64_t>(n1) * n2;
  if (static_cast<int64_t>(n1) * ny > widest) widest = static_cast<int64_t>(n1) * ny;
  if (static_cast<int64_t>(n2) * ny > widest) widest = static_cast<int64_t>(n2) * ny;
  const int64_t warps = (widest + 31) / 32;
  return 32 * static_cast<int>(warps < 1 ? 1 : (warps > 8 ? 8 : warps));
}

__host__ __device__ bool fits_shared(int64_t elems, size_t item) {
  return elems * static_cast<int64_t>(item) <= kSharedLimit;
}

// A problem's scratch: dynamic shared memory, or its slice of the global scratch.
template <class T>
__device__ T* problem_work(T* global_work, int64_t elems) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return global_work ? global_work + blockIdx.x * elems : reinterpret_cast<T*>(shared_bytes);
}

// The block-private histogram of the joint kernels, when `bins` of them fit in shared memory.
template <class T>
__device__ T* private_histogram(int64_t bins) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return fits_shared(bins, sizeof(T)) ? reinterpret_cast<T*>(shared_bytes) : nullptr;
}

template <class T>
__global__ void joint_codes_kernel(int64_t N, const int64_t* x1, const int64_t* x2,
                                   const int64_t* y, const int64_t* groups, const T* w, int n1,
                                   int n2, int ny, int64_t bins, T* out) {
  CudaBlock b{nullptr};
  joint_codes_body(b, blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                   static_cast<int64_t>(gridDim.x) * blockDim.x, N, x1, x2, y, groups, w, n1, n2,
                   ny, bins, private_histogram<T>(bins), out);
}

template <class T>
__global__ void joint_soft_kernel(int64_t N, const T* p1, const T* p2, const int64_t* y,
                                  const int64_t* groups, const T* w, int n1, int n2, int ny,
                                  int64_t bins, T* out) {
  CudaBlock b{nullptr};
  joint_soft_body(b, blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                  static_cast<int64_t>(gridDim.x) * blockDim.x, N, p1, p2, y, groups, w, n1, n2,
                  ny, bins, private_histogram<T>(bins), out);
}

// Launch shape of a joint kernel over `items` work items into `bins` outputs: with private
// histograms, few blocks (each flushes all its bins once), else one item per thread.
struct JointLaunch {
  unsigned blocks;
  size_t shared;
};

template <class T>
JointLaunch joint_launch(int64_t items, int64_t bins) {
  if (!fits_shared(bins, sizeof(T))) return {grid_for(items, kJointThreads), 0};
  const unsigned blocks = grid_for(items, kJointThreads);
  return {blocks < kJointPrivateBlocks ? blocks : kJointPrivateBlocks, bins * sizeof(T)};
}

// The per-problem kernels: blocks stride over the batch (a grid has at most 2^31 - 1 blocks),
// with 64-bit problem offsets (4 * blockIdx.x wraps past 2^30 problems).
template <class T>
__global__ void closed_forms_kernel(int64_t B, const T* P, int n1, int n2, int ny, T* out,
                                    T* global_work) {
  __shared__ double scratch[32];
  CudaBlock b{scratch};
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  T* work = problem_work(global_work, Marginals<T>::size(n1, n2, ny));
  for (int64_t p = blockIdx.x; p < B; p += gridDim.x) {
    closed_forms_body(b, P + p * cells, n1, n2, ny, work, out + 4 * p);
    b.sync();  // the next problem overwrites the scratch
  }
}

template <class T>
__global__ void alternation_kernel(int64_t B, const T* P, int n1, int n2, int ny, int steps,
                                   T omega, T* f, T* g, T* logR, T* global_work) {
  __shared__ double scratch[32];
  CudaBlock b{scratch};
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
  T* work = problem_work(global_work, alternation_work(n1, n2, ny));
  for (int64_t p = blockIdx.x; p < B; p += gridDim.x) {
    alternation_body(b, P + p * cells, n1, n2, ny, steps, omega, work, f + p * n1 * ny,
                     g + p * n2 * ny, logR + p * n1 * n2);
    b.sync();  // the next problem overwrites the scratch
  }
}

template <class T>
const char* joint_codes_t(int64_t N, const int64_t* x1, const int64_t* x2, const int64_t* y,
                          const int64_t* groups, const void* w, int n1, int n2, int ny, int G,
                          void* out, uintptr_t stream) {
  if (N == 0) return nullptr;
  const int64_t bins = static_cast<int64_t>(G) * n1 * n2 * ny;
  const JointLaunch l = joint_launch<T>(N, bins);
  joint_codes_kernel<T><<<l.blocks, kJointThreads, l.shared, as_stream(stream)>>>(
      N, x1, x2, y, groups, static_cast<const T*>(w), n1, n2, ny, bins, static_cast<T*>(out));
  return launched();
}

template <class T>
const char* joint_soft_t(int64_t N, const void* p1, const void* p2, const int64_t* y,
                         const int64_t* groups, const void* w, int n1, int n2, int ny, int G,
                         void* out, uintptr_t stream) {
  if (N == 0) return nullptr;
  const int64_t bins = static_cast<int64_t>(G) * n1 * n2 * ny;
  const JointLaunch l = joint_launch<T>(N * n1 * n2, bins);
  joint_soft_kernel<T><<<l.blocks, kJointThreads, l.shared, as_stream(stream)>>>(
      N, static_cast<const T*>(p1), static_cast<const T*>(p2), y, groups,
      static_cast<const T*>(w), n1, n2, ny, bins, static_cast<T*>(out));
  return launched();
}

template <class T>
const char* closed_forms_t(int64_t B, const void* P, int n1, int n2, int ny, void* out,
                           void* global_work, uintptr_t stream) {
  if (B == 0) return nullptr;
  const int64_t elems = Marginals<T>::size(n1, n2, ny);
  const size_t shared = global_work ? 0 : elems * sizeof(T);
  closed_forms_kernel<T><<<grid_for(B, 1), block_threads(n1, n2, ny), shared,
                           as_stream(stream)>>>(B, static_cast<const T*>(P), n1, n2, ny,
                                                static_cast<T*>(out),
                                                static_cast<T*>(global_work));
  return launched();
}

template <class T>
const char* alternation_t(int64_t B, const void* P, int n1, int n2, int ny, int steps,
                          double omega, void* f, void* g, void* logR, void* global_work,
                          uintptr_t stream) {
  if (B == 0) return nullptr;
  const int64_t elems = alternation_work(n1, n2, ny);
  const size_t shared = global_work ? 0 : elems * sizeof(T);
  alternation_kernel<T><<<grid_for(B, 1), block_threads(n1, n2, ny), shared,
                          as_stream(stream)>>>(
      B, static_cast<const T*>(P), n1, n2, ny, steps, static_cast<T>(omega), static_cast<T*>(f),
      static_cast<T*>(g), static_cast<T*>(logR), static_cast<T*>(global_work));
  return launched();
}

}  // namespace

const char* device_count(int* count) {
  *count = 0;
  const cudaError_t e = cudaGetDeviceCount(count);
  if (e != cudaSuccess) *count = 0;
  return check(e);
}

int64_t closed_forms_global_work(int n1, int n2, int ny, bool f64) {
  const int64_t elems = Marginals<double>::size(n1, n2, ny);
  return fits_shared(elems, f64 ? sizeof(double) : sizeof(float)) ? 0 : elems;
}

int64_t alternation_global_work(int n1, int n2, int ny, bool f64) {
  const int64_t elems = alternation_work(n1, n2, ny);
  return fits_shared(elems, f64 ? sizeof(double) : sizeof(float)) ? 0 : elems;
}

const char* solve_work(int n1, int n2, int ny, int64_t* doubles) {
  bool block = false;
  if (const char* error = block_solver_fits(n1, n2, ny, &block)) return error;
  *doubles = block ? 0 : static_cast<int64_t>(fastpid::solve_workspace_doubles(n1, n2, ny));
  return nullptr;
}

const char* solve(int64_t B, const double* P, int n1, int n2, int ny,
                  const fastpid::SolveOptions& opt, double* work, double* lower, double* upper,
                  double* f, double* g, int64_t* iterations, uintptr_t stream) {
  if (B == 0) return nullptr;
  bool block = false;
  if (const char* error = block_solver_fits(n1, n2, ny, &block)) return error;
  return block ? solve_blocks(B, P, n1, n2, ny, opt, lower, upper, f, g, iterations, stream)
               : solve_threads(B, P, n1, n2, ny, opt, work, lower, upper, f, g, iterations, stream);
}

const char* joint_codes(bool f64, int64_t N, const int64_t* x1, const int64_t* x2,
                        const int64_t* y, const int64_t* groups, const void* w, int n1, int n2,
                        int ny, int G, void* out, uintptr_t stream) {
  return f64 ? joint_codes_t<double>(N, x1, x2, y, groups, w, n1, n2, ny, G, out, stream)
             : joint_codes_t<float>(N, x1, x2, y, groups, w, n1, n2, ny, G, out, stream);
}

const char* joint_soft(bool f64, int64_t N, const void* p1, const void* p2, const int64_t* y,
                       const int64_t* groups, const void* w, int n1, int n2, int ny, int G,
                       void* out, uintptr_t stream) {
  return f64 ? joint_soft_t<double>(N, p1, p2, y, groups, w, n1, n2, ny, G, out, stream)
             : joint_soft_t<float>(N, p1, p2, y, groups, w, n1, n2, ny, G, out, stream);
}

const char* closed_forms(bool f64, int64_t B, const void* P, int n1, int n2, int ny, void* out,
                         void* global_work, uintptr_t stream) {
  return f64 ? closed_forms_t<double>(B, P, n1, n2, ny, out, global_work, stream)
             : closed_forms_t<float>(B, P, n1, n2, ny, out, global_work, stream);
}

const char* alternation(bool f64, int64_t B, const void* P, int n1, int n2, int ny, int steps,
                        double omega, void* f, void* g, void* logR, void* global_work,
                        uintptr_t stream) {
  return f64 ? alternation_t<double>(B, P, n1, n2, ny, steps, omega, f, g, logR, global_work,
                                     stream)
             : alternation_t<float>(B, P, n1, n2, ny, steps, omega, f, g, logR, global_work,
                                    stream);
}

}  // namespace fastpid::cuda

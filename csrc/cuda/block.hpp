// What a kernel body sees of its thread block: its rank, the block size, a barrier, block-wide
// reductions and atomic adds. The bodies in kernels.hpp are templates over this interface, so
// the same source runs as CUDA (CudaBlock) and, for the tests on machines without a GPU, on host
// threads (HostBlock: one std::thread per CUDA thread, a real barrier between phases).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTPID_BODY __device__ __forceinline__
#define FASTPID_BOTH __host__ __device__ inline
#else
#define FASTPID_BODY inline
#define FASTPID_BOTH inline
#endif

namespace fastpid::cuda {

struct MaxOp {
  template <class T>
  FASTPID_BODY T operator()(T a, T b) const { return a > b ? a : b; }
};
struct SumOp {
  template <class T>
  FASTPID_BODY T operator()(T a, T b) const { return a + b; }
};

#if defined(__CUDACC__)

// blockDim.x must be a multiple of 32 (whole warps take part in the shuffles).
struct CudaBlock {
  double* scratch;  // __shared__, at least 32 doubles, not used by the body

  __device__ int rank() const { return threadIdx.x; }
  __device__ int size() const { return blockDim.x; }
  __device__ void sync() const { __syncthreads(); }

  // Every thread gets op over all threads' v: a shuffle tree per warp, then the warps' results.
  template <class T, class Op>
  __device__ T allreduce(T v, Op op) const {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    T* slots = reinterpret_cast<T*>(scratch);
    const int warps = (blockDim.x + 31) >> 5;
    __syncthreads();  // the previous reduction may still be reading the slots
    if ((threadIdx.x & 31) == 0) slots[threadIdx.x >> 5] = v;
    __syncthreads();
    v = slots[0];
    for (int w = 1; w < warps; ++w) v = op(v, slots[w]);
    return v;
  }
  template <class T>
  __device__ T sum(T v) const { return allreduce(v, SumOp{}); }
  template <class T>
  __device__ T max(T v) const { return allreduce(v, MaxOp{}); }

  template <class T>
  __device__ void atomic_add(T* p, T v) const { atomicAdd(p, v); }
};

#else  // host emulation

}  // namespace fastpid::cuda

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace fastpid::cuda {

// Thrown in the waiting threads when a barrier is not completed in time: threads that reach
// different numbers of barriers (a deadlock on a GPU) fail the emulation instead of hanging it.
struct BrokenBarrier {};

// State shared by the host threads that stand in for one thread block.
class HostTeam {
 public:
  explicit HostTeam(int threads) : threads_(threads), slots_(threads) {}

  // Waiting threads spin with yield: with many more threads than cores this is far cheaper
  // than waking them through a condition variable. The last arrival's release of the new
  // generation publishes every thread's writes before the barrier (the arrivals form one
  // read-modify-write chain).
  void barrier() {
    const long generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (long spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (broken_.load() || (spins % 1024 == 0 && std::chrono::steady_clock::now() > deadline)) {
        broken_.store(true);
        throw BrokenBarrier{};
      }
      std::this_thread::yield();
    }
  }
  void mark_broken() { broken_.store(true); }
  bool broken() const { return broken_.load(); }
  double* slots() { return slots_.data(); }

 private:
  const int threads_;
  std::vector<double> slots_;
  std::atomic<int> arrived_{0};
  std::atomic<long> generation_{0};
  std::atomic<bool> broken_{false};
};

struct HostBlock {
  HostTeam* team;
  int r, n;

  int rank() const { return r; }
  int size() const { return n; }
  void sync() const { team->barrier(); }

  template <class T, class Op>
  T allreduce(T v, Op op) const {
    T* slots = reinterpret_cast<T*>(team->slots());
    team->barrier();
    slots[r] = v;
    team->barrier();
    v = slots[0];
    for (int w = 1; w < n; ++w) v = op(v, slots[w]);
    return v;
  }
  template <class T>
  T sum(T v) const { return allreduce(v, SumOp{}); }
  template <class T>
  T max(T v) const { return allreduce(v, MaxOp{}); }

  template <class T>
  void atomic_add(T* p, T v) const {
    T expected;
    __atomic_load(p, &expected, __ATOMIC_RELAXED);
    T desired = expected + v;
    while (!__atomic_compare_exchange(p, &expected, &desired, false, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED))
      desired = expected + v;
  }
};

// Runs body(block) on `threads` host threads that together behave as one thread block;
// throws std::runtime_error when they do not all pass the same barriers.
template <class Body>
void run_host_block(int threads, Body body) {
  HostTeam team(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&team, &body, t, threads] {
      try {
        body(HostBlock{&team, t, threads});
      } catch (const BrokenBarrier&) {
        team.mark_broken();
      }
    });
  for (auto& th : pool) th.join();
  if (team.broken())
    throw std::runtime_error(
        "emulated thread block deadlocked: its threads did not all reach the same barriers");
}

#endif

}  // namespace fastpid::cuda

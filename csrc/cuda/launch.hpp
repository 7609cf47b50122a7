// Host-side entry points of the CUDA kernels (csrc/cuda/*.cu), callable from code compiled without
// nvcc. Device arrays come in as raw pointers (from torch tensors) and work is queued on
// `stream` (a cudaStream_t, e.g. torch's current stream). Each returns nullptr on success and
// otherwise the CUDA error text; nothing here throws across the C++/CUDA boundary.
//
// `f64` selects double (true) or float (false) for the floating-point arrays.
#pragma once

#include <cstdint>

#include "solver_core.hpp"

namespace fastpid::cuda {

// Number of CUDA devices this build can use (0 with a reason when it cannot).
const char* device_count(int* count);

// Per problem, elements of global scratch the closed forms / the alternation need; 0 when the
// problem fits in the block's shared memory.
int64_t closed_forms_global_work(int n1, int n2, int ny, bool f64);
int64_t alternation_global_work(int n1, int n2, int ny, bool f64);

// Adds the (weighted) count of each code triple to out[G][n1][n2][ny]; groups/weights may be null
// (G = 1 without groups).
const char* joint_codes(bool f64, int64_t N, const int64_t* x1, const int64_t* x2,
                        const int64_t* y, const int64_t* groups, const void* weights, int n1,
                        int n2, int ny, int G, void* out, uintptr_t stream);
// Adds w_n p1[n] ⊗ p2[n] at y_n (and group g_n) to out[G][n1][n2][ny].
const char* joint_soft(bool f64, int64_t N, const void* p1, const void* p2, const int64_t* y,
                       const int64_t* groups, const void* weights, int n1, int n2, int ny, int G,
                       void* out, uintptr_t stream);
// out[B][4] = (I(X1,X2;Y), I(X1;Y), I(X2;Y), I_Q0) of P[B][n1][n2][ny].
const char* closed_forms(bool f64, int64_t B, const void* P, int n1, int n2, int ny, void* out,
                         void* global_work, uintptr_t stream);
// f[B][n1][ny], g[B][n2][ny], logR[B][n1][n2] after `steps` alternation steps from the proxy.
const char* alternation(bool f64, int64_t B, const void* P, int n1, int n2, int ny, int steps,
                        double omega, void* f, void* g, void* logR, void* global_work,
                        uintptr_t stream);

// Doubles of global scratch per problem that solve() needs on the current device: 0 when the
// problem takes the block solver (its workspace fits in shared memory).
const char* solve_work(int n1, int n2, int ny, int64_t* doubles);
// The certified solver of solver_core.hpp (float64 only): bounds lower/upper[B], potentials
// f[B][n1][ny], g[B][n2][ny] (-inf on masked entries) and iterations[B]; newton=false runs
// warm_steps alternation steps only (method "fast"). One problem per thread block
// (solver_block.hpp) when its workspace fits in the device's shared memory per block, else
// one problem per thread with `work` (solve_work doubles each) as scratch.
const char* solve(int64_t B, const double* P, int n1, int n2, int ny,
                  const fastpid::SolveOptions& opt, double* work, double* lower, double* upper,
                  double* f, double* g, int64_t* iterations, uintptr_t stream);

}  // namespace fastpid::cuda

// C++ CPU solver for V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2): the same algorithm and
// certificate as the PyTorch reference (fastpid/solver.py), one problem per thread (or all
// threads on each of a few large problems; see inner_threads).
#pragma once

#include <cstdint>

#include "solver_core.hpp"

namespace fastpid {

// P: (B, n1, n2, ny) normalised, C order. Outputs: lower, upper (B), f (B, n1, ny),
// g (B, n2, ny) with -inf on masked entries, iterations (B), and unless null the feasible
// couplings behind the upper bounds (B, n1, n2, ny). opt.cancel stops every solve early.
void solve_batch(const double* P, int64_t B, int n1, int n2, int ny, const SolveOptions& opt,
                 double* lower, double* upper, double* f, double* g, int64_t* iterations,
                 double* coupling = nullptr);

// Threads solve_batch() gives each problem: all of them where the batch has fewer problems
// than threads and each problem's Newton system is large (at least kInnerThreadsFrom
// unknowns before the free ones are picked out, the Schur side's n2 * ny or the low-rank
// n1 * n2), else 1 (one problem per thread). The results are the same either way.
constexpr int kInnerThreadsFrom = 256;
int inner_threads(int64_t B, int n1, int n2, int ny, const SolveOptions& opt);

// out (B, 4): I(X1,X2;Y), I(X1;Y), I(X2;Y) and I of the proxy coupling Q0 of each problem.
void closed_forms_batch(const double* P, int64_t B, int n1, int n2, int ny, double* out);

}  // namespace fastpid

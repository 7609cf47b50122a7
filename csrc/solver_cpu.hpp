// C++ CPU solver for V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2): the same algorithm and
// certificate as the PyTorch reference (fastpid/solver.py), one problem per thread.
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

// out (B, 4): I(X1,X2;Y), I(X1;Y), I(X2;Y) and I of the proxy coupling Q0 of each problem.
void closed_forms_batch(const double* P, int64_t B, int n1, int n2, int ny, double* out);

}  // namespace fastpid

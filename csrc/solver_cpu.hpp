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

// The PID terms of each problem from the solver's bracket lower <= V <= upper (B each, as
// solve_batch returns them): terms (7, B) = redundancy, unique1, unique2, synergy, I(X1,X2;Y),
// I(X1;Y), I(X2;Y), each >= 0, in the units `scale` (1: nats); gap (B) = the width of the
// bracket reported, in nats; broken (B): whether the solver's bracket was invalid (a bound not
// finite, or crossed beyond rounding) and the closed-form bracket replaced it. The same
// formulas as the general route's (fastpid.api.pid_terms, fastpid._certify.checked_bracket,
// fastpid.solver.closed_form_bracket), to the last bit.
void pid_terms_batch(const double* P, int64_t B, int n1, int n2, int ny, const double* lower,
                     const double* upper, double scale, double* terms, double* gap, bool* broken);

}  // namespace fastpid

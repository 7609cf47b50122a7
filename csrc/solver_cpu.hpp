// C++ CPU solver for V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2): the same algorithm and
// certificate as the PyTorch reference (fastpid/solver.py), one problem per thread.
#pragma once

#include <cstdint>

#include "solver_core.hpp"

namespace fastpid {

// Throws std::length_error (Python: ValueError) where the solver's int indices would not reach
// every entry of a problem n1 x n2 x ny or of its workspace for that elimination and assembly.
void check_indexable(int n1, int n2, int ny, bool lowrank, bool newton, bool gram);

// P: (B, n1, n2, ny) normalised, C order. Outputs: lower, upper (B), f (B, n1, ny),
// g (B, n2, ny) with -inf on masked entries, iterations (B), and unless null the feasible
// couplings behind the upper bounds (B, n1, n2, ny). opt.cancel stops every solve early.
void solve_batch(const double* P, int64_t B, int n1, int n2, int ny, const SolveOptions& opt,
                 double* lower, double* upper, double* f, double* g, int64_t* iterations,
                 double* coupling = nullptr);

// out (B, 4): I(X1,X2;Y), I(X1;Y), I(X2;Y) and I of the proxy coupling Q0 of each problem.
void closed_forms_batch(const double* P, int64_t B, int n1, int n2, int ny, double* out);

// out (B): the upper bound the solver takes from the coupling Q[b] (B, n1, n2, ny) of each
// problem P[b] (normalised): I of Q's feasible rounding, +inf where an admissible entry of Q is
// NaN or infinite. Q is left as it is. For the tests.
void primal_bound_batch(const double* P, const double* Q, int64_t B, int n1, int n2, int ny, double* out);

// The PID terms of each problem from a bracket lower <= V <= upper (B each, as solve_batch
// returns them; solve_pid_batch() ends with the same step, which the tests drive through
// this), V its midpoint (method "exact") or, at_upper, upper (method "fast": a feasible
// coupling's I): terms (7, B) = redundancy, unique1, unique2, synergy, I(X1,X2;Y), I(X1;Y), I(X2;Y),
// each >= 0, in the units `scale` (1: nats); gap (B) = the width of the
// bracket reported, in nats; broken (B): whether the solver's bracket was invalid (a bound not
// finite, or crossed beyond rounding) and the closed-form bracket replaced it. The same
// formulas as the general route's (fastpid.api.pid_terms, fastpid._certify.checked_bracket,
// fastpid.solver.closed_form_bracket), to the last bit.
void pid_terms_batch(const double* P, int64_t B, int n1, int n2, int ny, const double* lower,
                     const double* upper, bool at_upper, double scale, double* terms, double* gap,
                     bool* broken);

// Method "proxy": pid_terms_batch() of each problem P[b] (normalised) with its closed-form
// bracket max(I1, I2) <= V <= min(I_Q0, I12, I1 + I2) as the bracket and V at its upper end.
void proxy_pid_batch(const double* P, int64_t B, int n1, int n2, int ny, double scale, double* terms,
                     double* gap, bool* broken);

// pid()'s preparation of raw joints P (B, n1, n2, ny) for the call below: out = each problem
// divided by its total, its entries above 0 but below `negligible` then dropped and the rest
// renormalised (as fastpid._certify.drop_negligible does; dropped (B) = the mass dropped), and
// the free potentials of each source (pairs (x1, y), (x2, y) with mass), and seen (n1 + n2 +
// ny, zeroed by the caller): 1 for each value of X1, X2, Y with mass in some problem. False
// (outputs partly written) where a problem is one the general route must take (it raises): a
// total not positive and finite, or an entry negative or NaN.
bool prepare_batch(const double* P, int64_t B, int n1, int n2, int ny, double negligible,
                   double* out, int64_t* free1, int64_t* free2, double* dropped, unsigned char* seen);

// solve_batch() and pid_terms_batch() in one pass, problem by problem: each problem P[b]
// (normalised) solved with its sources swapped where swap[b] (V is symmetric in X1, X2), then
// its terms, gap and broken as pid_terms_batch() writes them, from its closed forms and bounds
// (V at the upper bound where !opt.newton, method "fast").
// iterations (B) as solve_batch() writes them. The same results as those two calls (the terms
// to rounding: the closed forms are the solve's), with opt.product_form as
// product_form_suits() says for each orientation (opt's is not read).
void solve_pid_batch(const double* P, int64_t B, int n1, int n2, int ny, const bool* swap,
                     const SolveOptions& opt, double scale, double* terms, double* gap,
                     bool* broken, int64_t* iterations);

}  // namespace fastpid

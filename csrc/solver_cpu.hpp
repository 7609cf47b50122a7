// C++ CPU solver for V(P) = min_{Q in Delta_P} I_Q(Y; X1, X2): the same algorithm and
// certificate as the PyTorch reference (fastpid/solver.py), one problem per thread.
#pragma once

#include <cstdint>

namespace fastpid {

struct SolveOptions {
  double tol = 1e-8;       // certified gap to reach (nats)
  int max_iter = 500;      // Newton iterations
  int warm_steps = 10;     // Blahut-Arimoto steps before Newton (or the whole budget: fast)
  int polish_sweeps = 20;  // Sinkhorn sweeps in the primal bound at barrier centres
  double mu_factor = 0.02; // barrier parameter shrink per centring
  bool newton = true;      // false: method "fast", alternation only
};

// P: (B, n1, n2, ny) normalised, C order. Outputs: lower, upper (B), f (B, n1, ny),
// g (B, n2, ny) with -inf on masked entries, iterations (B).
void solve_batch(const double* P, int64_t B, int n1, int n2, int ny, const SolveOptions& opt,
                 double* lower, double* upper, double* f, double* g, int64_t* iterations);

}  // namespace fastpid

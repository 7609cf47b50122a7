// Python bindings of the CPU solver: numpy arrays in and out through the buffer protocol.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <csignal>
#include <climits>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "solver_cpu.hpp"
#include "vector_math.hpp"

namespace py = pybind11;

namespace {

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Ctrl-C during a solve. The solve runs without the GIL, so Python's own SIGINT handler can
// only note the signal; while any solve runs, a handler of ours counts it in `g_sigints`
// (every solver compares the count with its value at the solve's start between steps) and
// passes the signal on to Python's handler, and the solve then returns at once and raises
// KeyboardInterrupt through PyErr_CheckSignals() (or, where Python's handlers raise nothing
// or the solve runs off the main thread, solves again: run_cancellable).
volatile int g_sigints = 0;
struct sigaction g_python_sigint;  // the handler ours replaced
std::mutex g_sigint_mutex;
int g_solves_running = 0;
bool g_installed = false;

extern "C" void on_sigint(int sig) {
  g_sigints = g_sigints + 1;
  if (!(g_python_sigint.sa_flags & SA_SIGINFO) && g_python_sigint.sa_handler != SIG_DFL &&
      g_python_sigint.sa_handler != SIG_IGN)
    g_python_sigint.sa_handler(sig);
}

// Installs on_sigint for its lifetime (the first of concurrent solves installs it, the last
// restores Python's), only over a plain handler function such as Python's.
class SigintGuard {
 public:
  SigintGuard() {
    std::lock_guard<std::mutex> lock(g_sigint_mutex);
    if (g_solves_running++ > 0) return;
    struct sigaction current;
    if (sigaction(SIGINT, nullptr, &current) != 0 || (current.sa_flags & SA_SIGINFO) ||
        current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN)
      return;
    g_python_sigint = current;
    struct sigaction ours = current;
    ours.sa_handler = on_sigint;
    g_installed = sigaction(SIGINT, &ours, nullptr) == 0;
  }
  ~SigintGuard() {
    std::lock_guard<std::mutex> lock(g_sigint_mutex);
    if (--g_solves_running > 0) return;
    // Only over our own handler: a setting made meanwhile (signal.signal(SIGINT, SIG_DFL) in
    // the main thread while another thread solved) had been put back to Python's handler.
    struct sigaction current;
    if (g_installed && sigaction(SIGINT, nullptr, &current) == 0 && !(current.sa_flags & SA_SIGINFO) &&
        current.sa_handler == on_sigint)
      sigaction(SIGINT, &g_python_sigint, nullptr);
    g_installed = false;
  }
};

// P must be a batch (B, n1, n2, ny) with sizes the solvers' int indexing can hold.
void check_batch(const Array& P) {
  if (P.ndim() != 4)
    throw std::invalid_argument("P must have shape (B, n1, n2, ny); got " +
                                std::to_string(P.ndim()) + " dimensions");
  for (int d = 1; d < 4; ++d)
    if (P.shape(d) < 1 || P.shape(d) > INT_MAX / 4)
      throw std::invalid_argument("P's axes n1, n2, ny must be between 1 and " +
                                  std::to_string(INT_MAX / 4) + "; axis " + std::to_string(d) +
                                  " has " + std::to_string(P.shape(d)));
}

// run(opt) with the GIL released and opt = options with the Schur complement's assembly and
// f-block factorisation for problems of ny target values (where gram or product_form is
// given, those) and the Ctrl-C flag: a Ctrl-C stops every solve at its next step, then raises
// KeyboardInterrupt here.
template <class Run>
void run_cancellable(fastpid::SolveOptions opt, int n2, int ny, std::optional<bool> gram,
                     std::optional<bool> product_form, Run run) {
  opt.gram = gram.value_or(fastpid::gram_suits(ny, opt.lowrank, opt.newton));
  opt.product_form =
      product_form.value_or(fastpid::product_form_suits(n2, ny, opt.lowrank, opt.newton, opt.gram));
  if (opt.product_form && !(fastpid::product_form_fits(n2, ny) && !opt.gram && !opt.lowrank))
    throw std::invalid_argument("product_form needs the Schur complement's rank-structured assembly "
                                "(gram=False, no lowrank) and ny >= 2 n2 + 1; got n2=" +
                                std::to_string(n2) + ", ny=" + std::to_string(ny));
  opt.cancel = &g_sigints;
  for (;;) {
    {
      SigintGuard guard;
      opt.cancel_from = g_sigints;
      // A Ctrl-C counted before the read above (another solve's handler was in place) would
      // not stop this solve: Python's handler has been told of it, so it raises here.
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      py::gil_scoped_release release;
      run(opt);
    }
    // Python's handlers run here (in the main thread): one that raises stops the solve.
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    // A Ctrl-C that raised nothing (a handler that returns, or a solve in another thread than
    // the main one) cut the solves short: solve again rather than return unfinished bounds.
    if (g_sigints == opt.cancel_from) return;
  }
}

py::tuple solve(Array P, const fastpid::SolveOptions& options, bool return_coupling,
                std::optional<bool> gram, std::optional<bool> product_form) {
  check_batch(P);
  const auto B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  py::array_t<double> lower(B), upper(B), f({B, (py::ssize_t)n1, (py::ssize_t)ny}),
      g({B, (py::ssize_t)n2, (py::ssize_t)ny});
  py::array_t<int64_t> iterations(B);
  py::array_t<double> coupling(return_coupling ? std::vector<py::ssize_t>{B, n1, n2, ny}
                                               : std::vector<py::ssize_t>{0});
  const double* p = P.data();
  double *lo = lower.mutable_data(), *up = upper.mutable_data(), *fp = f.mutable_data(),
         *gp = g.mutable_data(), *q = return_coupling ? coupling.mutable_data() : nullptr;
  int64_t* it = iterations.mutable_data();
  run_cancellable(options, n2, ny, gram, product_form, [&](const fastpid::SolveOptions& opt) {
                    fastpid::solve_batch(p, B, n1, n2, ny, opt, lo, up, fp, gp, it, q);
                  });
  if (return_coupling) return py::make_tuple(lower, upper, f, g, iterations, coupling);
  return py::make_tuple(lower, upper, f, g, iterations);
}

py::array_t<double> closed_forms(Array P) {
  check_batch(P);
  const auto B = P.shape(0);
  py::array_t<double> out({B, py::ssize_t(4)});
  const double* p = P.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    fastpid::closed_forms_batch(p, B, static_cast<int>(P.shape(1)), static_cast<int>(P.shape(2)),
                                static_cast<int>(P.shape(3)), o);
  }
  return out;
}

py::array_t<double> primal_bound(Array P, Array Q) {
  check_batch(P);
  if (Q.ndim() != 4 || !std::equal(P.shape(), P.shape() + 4, Q.shape()))
    throw std::invalid_argument("Q must have P's shape (B, n1, n2, ny)");
  const auto B = P.shape(0);
  py::array_t<double> out(B);
  const double *p = P.data(), *q = Q.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    fastpid::primal_bound_batch(p, q, B, static_cast<int>(P.shape(1)), static_cast<int>(P.shape(2)),
                                static_cast<int>(P.shape(3)), o);
  }
  return out;
}

py::tuple pid_terms(Array P, Array lower, Array upper, double scale, bool at_upper) {
  check_batch(P);
  const auto B = P.shape(0);
  if (lower.ndim() != 1 || upper.ndim() != 1 || lower.shape(0) != B || upper.shape(0) != B)
    throw std::invalid_argument("lower and upper must have shape (B,) = (" + std::to_string(B) + ",)");
  py::array_t<double> terms({py::ssize_t(7), B}), gap(B);
  py::array_t<bool> broken(B);
  const double *p = P.data(), *lo = lower.data(), *up = upper.data();
  double *t = terms.mutable_data(), *gp = gap.mutable_data();
  bool* br = broken.mutable_data();
  {
    py::gil_scoped_release release;
    fastpid::pid_terms_batch(p, B, static_cast<int>(P.shape(1)), static_cast<int>(P.shape(2)),
                             static_cast<int>(P.shape(3)), lo, up, at_upper, scale, t, gp, br);
  }
  return py::make_tuple(terms, gap, broken);
}
py::tuple proxy_pid(Array P, double scale) {
  check_batch(P);
  const auto B = P.shape(0);
  py::array_t<double> terms({py::ssize_t(7), B}), gap(B);
  py::array_t<bool> broken(B);
  {
    py::gil_scoped_release release;
    fastpid::proxy_pid_batch(P.data(), B, static_cast<int>(P.shape(1)), static_cast<int>(P.shape(2)),
                             static_cast<int>(P.shape(3)), scale, terms.mutable_data(), gap.mutable_data(),
                             broken.mutable_data());
  }
  return py::make_tuple(terms, gap, broken);
}

// (normalised P, free1, free2, most1, most2, dropped, seen) of prepare_batch() (most: the
// largest count; seen: bool), or None where it returns false.
py::object prepare(Array P, double negligible) {
  check_batch(P);
  const auto B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  py::array_t<double> out({B, py::ssize_t(n1), py::ssize_t(n2), py::ssize_t(ny)});
  py::array_t<int64_t> free1(B), free2(B);
  py::array_t<double> dropped(B);
  py::array_t<bool> seen(n1 + n2 + ny);
  std::fill(seen.mutable_data(), seen.mutable_data() + seen.size(), false);
  bool ok;
  {
    py::gil_scoped_release release;
    ok = fastpid::prepare_batch(P.data(), B, n1, n2, ny, negligible, out.mutable_data(),
                                free1.mutable_data(), free2.mutable_data(), dropped.mutable_data(),
                                reinterpret_cast<unsigned char*>(seen.mutable_data()));
  }
  if (!ok) return py::none();
  const int64_t *f1 = free1.data(), *f2 = free2.data();
  return py::make_tuple(out, free1, free2, *std::max_element(f1, f1 + B), *std::max_element(f2, f2 + B),
                        dropped, seen);
}

py::tuple solve_pid(Array P, py::array_t<bool, py::array::c_style | py::array::forcecast> swap,
                    const fastpid::SolveOptions& options, double scale) {
  check_batch(P);
  const auto B = P.shape(0);
  if (swap.ndim() != 1 || swap.shape(0) != B)
    throw std::invalid_argument("swap must have shape (B,) = (" + std::to_string(B) + ",)");
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  py::array_t<double> terms({py::ssize_t(7), B}), gap(B);
  py::array_t<bool> broken(B), converged(B);
  py::array_t<int64_t> iterations(B);
  const double* p = P.data();
  const bool* sw = swap.data();
  double *t = terms.mutable_data(), *gp = gap.mutable_data();
  bool* br = broken.mutable_data();
  int64_t* it = iterations.mutable_data();
  // A swapped problem is solved as (n2, n1, ny): the f-blocks' factorisation is chosen per
  // orientation inside solve_pid_batch.
  run_cancellable(options, n2, ny, std::nullopt, std::nullopt, [&](const fastpid::SolveOptions& opt) {
                    fastpid::solve_pid_batch(p, B, n1, n2, ny, sw, opt, scale, t, gp, br, it);
                  });
  bool settled = true;  // every problem converged with a valid bracket
  bool* cv = converged.mutable_data();
  for (py::ssize_t b = 0; b < B; ++b) {
    cv[b] = gp[b] <= options.tol;
    settled = settled && cv[b] && !br[b];
  }
  return py::make_tuple(terms, gap, converged, broken, iterations, settled);
}

// The solver's own exp, log and expm1 (vector_math.hpp) of every entry of x, for the tests.
py::tuple exp_log(Array x) {
  const auto n = x.size();
  py::array_t<double> e(n), l(n), em(n);
  const double* xp = x.data();
  double *ep = e.mutable_data(), *lp = l.mutable_data(), *emp = em.mutable_data();
  for (py::ssize_t k = 0; k < n; ++k) {
    ep[k] = fastpid::detail::vexp(xp[k]);
    lp[k] = fastpid::detail::vlog(xp[k]);
    emp[k] = fastpid::detail::vexpm1(xp[k]);
  }
  return py::make_tuple(e, l, em);
}

}  // namespace

void register_solver(py::module_& m) {
  using fastpid::SolveOptions;
  py::class_<SolveOptions>(m, "SolveOptions",
                           "Settings of the native solvers (CPU, CUDA and the emulation); "
                           "fastpid.cpp.options() fills them from the reference's constants.")
      .def(py::init<>())
      .def_readwrite("tol", &SolveOptions::tol)
      .def_readwrite("max_iter", &SolveOptions::max_iter)
      .def_readwrite("warm_steps", &SolveOptions::warm_steps)
      .def_readwrite("polish_sweeps", &SolveOptions::polish_sweeps)
      .def_readwrite("mu_factor", &SolveOptions::mu_factor)
      .def_readwrite("omega", &SolveOptions::omega)
      .def_readwrite("newton", &SolveOptions::newton)
      .def_readwrite("lowrank", &SolveOptions::lowrank);
  m.def(
      "workspace_doubles",
      [](int n1, int n2, int ny, bool lowrank, bool newton) {
        if (n1 < 1 || n2 < 1 || ny < 1) throw std::invalid_argument("sizes must be >= 1");
        const bool gram = fastpid::gram_suits(ny, lowrank, newton);
        // The memory checks ask this before a solve: a shape the solver cannot index is
        // refused here, up front.
        fastpid::check_indexable(n1, n2, ny, lowrank, newton, gram);
        return fastpid::solve_workspace_doubles(n1, n2, ny, lowrank, newton, gram);
      },
      py::arg("n1"), py::arg("n2"), py::arg("ny"), py::arg("lowrank") = false, py::arg("newton") = true,
      "Doubles of scratch one problem (n1, n2, ny) takes in the CPU solver (per thread), with "
      "the low-rank elimination or the Schur complement, for method 'exact' (newton) or 'fast'.");
  m.def(
      "closed_forms_resident_doubles",
      [](int n1, int n2, int ny) {
        if (n1 < 1 || n2 < 1 || ny < 1) throw std::invalid_argument("sizes must be >= 1");
        return fastpid::closed_forms_resident_doubles(n1, n2, ny);
      },
      py::arg("n1"), py::arg("n2"), py::arg("ny"),
      "Doubles of scratch one problem (n1, n2, ny) writes in closed_forms() and proxy_pid() (per "
      "thread): with few source values and many target values, several times the joint.");
  m.def("closed_forms", &closed_forms, py::arg("P"),
        "(B, 4): I(X1,X2;Y), I(X1;Y), I(X2;Y) and I of the proxy coupling Q0 = "
        "P(x1,y) P(x2,y) / p(y) of each problem of a batch P[B, n1, n2, ny] (normalised "
        "float64), in nats.");
  m.def("pid_terms", &pid_terms, py::arg("P"), py::arg("lower"), py::arg("upper"), py::arg("scale") = 1.0,
        py::arg("at_upper") = false,
        "(terms, gap, broken) of a batch P[B, n1, n2, ny] (normalised float64) from the "
        "solver's bounds lower <= V <= upper (B,), V their midpoint or, at_upper, upper: terms "
        "(7, B) = redundancy, unique1, unique2, "
        "synergy, mi, mi1, mi2 (>= 0) times scale (1: nats), gap (B,) in nats, and whether each "
        "bracket was invalid and the closed-form one replaced it: solve_pid()'s finishing "
        "step on given bounds, for the tests of brackets a solver rarely returns.");
  m.def("proxy_pid", &proxy_pid, py::arg("P"), py::arg("scale") = 1.0,
        "(terms, gap, broken) of method 'proxy' for a batch P[B, n1, n2, ny] (normalised "
        "float64): pid_terms() with the closed-form bracket max(I1, I2) <= V <= min(I_Q0, I12, "
        "I1 + I2) as the bounds and V at its upper end, in one pass.");
  m.def("prepare", &prepare, py::arg("P"), py::arg("negligible"),
        "(normalised P, free1, free2, most1, most2, dropped) for a batch P[B, n1, n2, ny] of "
        "raw joints: each problem divided by its total, its entries in (0, negligible) then "
        "dropped and the rest renormalised, the free potentials of each source (pairs (x, y) "
        "with mass), (B,) each, their largest counts, the mass dropped, (B,), and which values of "
        "X1, X2 and Y have mass in some problem, (n1 + n2 + ny,) bool; None where a total is not "
        "positive and finite or an entry is negative or NaN. pid()'s first step.");
  m.def("solve_pid", &solve_pid, py::arg("P"), py::arg("swap"), py::arg("options"), py::arg("scale") = 1.0,
        "(terms, gap, converged, broken, iterations, settled) of a batch P[B, n1, n2, ny] "
        "(normalised float64): solve() of each problem, with its sources swapped where swap "
        "(B,) says so, then pid_terms() from its bounds (at_upper where not options.newton, "
        "method 'fast'), in one pass; converged = gap <= "
        "options.tol, and settled whether every problem converged with a valid bracket. "
        "Ctrl-C stops the solve between two steps and raises KeyboardInterrupt.");
  m.def("_primal_bound", &primal_bound, py::arg("P"), py::arg("Q"),
        "(B,): the upper bound the CPU solver takes from couplings Q[B, n1, n2, ny] of the "
        "problems P (normalised float64): I of each Q's feasible rounding, +inf where an "
        "admissible entry is NaN or infinite (for the tests).");
  m.def("_exp_log", &exp_log, py::arg("x"),
        "(exp(x), log(x), expm1(x)) of every entry of x (flattened) as the solver computes them: its own "
        "vectorisable versions, for the tests of their accuracy.");
  m.def("solve", &solve, py::arg("P"), py::arg("options"), py::arg("return_coupling") = false,
        py::arg("gram") = py::none(), py::arg("product_form") = py::none(),
        "Certified bounds on V for a batch P[B, n1, n2, ny] (normalised float64), one problem "
        "per thread: returns (lower, upper, f, g, iterations[, coupling]). options.newton=False "
        "runs only the warm_steps alternation steps (method 'fast'). gram: assemble the Schur "
        "complement by the Gram product (default: where gram_suits, for ny <= 10) or by its "
        "rank structure; product_form: factorise the f-blocks in product form (default: where "
        "product_form_suits, few x2 values next to y's) or by Cholesky; the tests compare the "
        "choices. Ctrl-C stops the solve between two steps "
        "and raises KeyboardInterrupt.");
}

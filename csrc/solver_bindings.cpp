// Python bindings of the CPU solver: numpy arrays in and out through the buffer protocol.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "solver_cpu.hpp"

namespace py = pybind11;

namespace {

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::tuple solve(Array P, double tol, int max_iter, int warm_steps, int polish_sweeps,
                double mu_factor, bool newton) {
  if (P.ndim() != 4)
    throw std::invalid_argument("P must have shape (B, n1, n2, ny); got " +
                                std::to_string(P.ndim()) + " dimensions");
  const auto B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  fastpid::SolveOptions opt;
  opt.tol = tol;
  opt.max_iter = max_iter;
  opt.warm_steps = warm_steps;
  opt.polish_sweeps = polish_sweeps;
  opt.mu_factor = mu_factor;
  opt.newton = newton;
  py::array_t<double> lower(B), upper(B), f({B, (py::ssize_t)n1, (py::ssize_t)ny}),
      g({B, (py::ssize_t)n2, (py::ssize_t)ny});
  py::array_t<int64_t> iterations(B);
  const double* p = P.data();
  double *lo = lower.mutable_data(), *up = upper.mutable_data(), *fp = f.mutable_data(),
         *gp = g.mutable_data();
  int64_t* it = iterations.mutable_data();
  {
    py::gil_scoped_release release;
    fastpid::solve_batch(p, B, n1, n2, ny, opt, lo, up, fp, gp, it);
  }
  return py::make_tuple(lower, upper, f, g, iterations);
}

}  // namespace

void register_solver(py::module_& m) {
  m.def("solve", &solve, py::arg("P"), py::arg("tol"), py::arg("max_iter"),
        py::arg("warm_steps"), py::arg("polish_sweeps"), py::arg("mu_factor"),
        py::arg("newton"),
        "Certified bounds on V for a batch P[B, n1, n2, ny] (normalised float64), one problem "
        "per thread: returns (lower, upper, f, g, iterations). newton=False runs only the "
        "warm_steps alternation steps (method 'fast').");
}

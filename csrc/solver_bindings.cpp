// Python bindings of the CPU solver: numpy arrays in and out through the buffer protocol.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "solver_cpu.hpp"

namespace py = pybind11;

namespace {

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::tuple solve(Array P, const fastpid::SolveOptions& opt) {
  if (P.ndim() != 4)
    throw std::invalid_argument("P must have shape (B, n1, n2, ny); got " +
                                std::to_string(P.ndim()) + " dimensions");
  const auto B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
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
      .def_readwrite("newton", &SolveOptions::newton);
  m.def("solve", &solve, py::arg("P"), py::arg("options"),
        "Certified bounds on V for a batch P[B, n1, n2, ny] (normalised float64), one problem "
        "per thread: returns (lower, upper, f, g, iterations). options.newton=False runs only "
        "the warm_steps alternation steps (method 'fast').");
}

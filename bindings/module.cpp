// The xrdflow._core extension: one module, bindings split by domain.
#include <pybind11/pybind11.h>

#include "fail.hpp"

namespace py = pybind11;

void add_reflections(py::module_& m);
void add_render(py::module_& m);
void add_augment(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "xrdflow C++ core: reflections, structure factors and pattern rendering (use the xrdflow package API)";
  // Every error raised by the C++ drivers through xrdflow::fail() surfaces
  // as xrdflow.CoreError, a ValueError.
  py::register_exception<xrdflow::Error>(m, "CoreError", PyExc_ValueError);
  add_reflections(m);
  add_render(m);
  add_augment(m);
#ifdef XRDFLOW_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}

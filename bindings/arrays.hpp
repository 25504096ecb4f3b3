// Checking NumPy arrays handed to the core.  The Python layer coerces dtypes
// and layouts; here we only verify, so the core never copies silently and a
// wrong array raises TypeError/ValueError instead of reading out of bounds.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

namespace xrdflow_bind {
namespace py = pybind11;

// shape entries < 0 mean "any length"; returns the data pointer.
template <typename T>
const T* checked_array(const py::object& obj, const char* name, std::vector<py::ssize_t> shape) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy array, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  const auto a = py::reinterpret_borrow<py::array>(obj);
  // Compare dtypes by value (byte order included), not identity: h5py and
  // other readers hand out equal dtypes that are different objects.
  if (!a.dtype().attr("__eq__")(py::dtype::of<T>()).template cast<bool>())
    throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(py::dtype::of<T>())) +
                         ", got " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
    throw py::value_error(std::string(name) + " must have " + std::to_string(shape.size()) + " dimensions, got " +
                          std::to_string(a.ndim()));
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] >= 0 && a.shape(i) != shape[i])
      throw py::value_error(std::string(name) + ": dimension " + std::to_string(i) + " must be " +
                            std::to_string(shape[i]) + ", got " + std::to_string(a.shape(i)));
  return static_cast<const T*>(a.data());
}

inline py::ssize_t length(const py::object& obj) { return py::reinterpret_borrow<py::array>(obj).shape(0); }

// Hand a std::vector to NumPy without copying; the array owns the vector.
template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), owner);
}

}  // namespace xrdflow_bind

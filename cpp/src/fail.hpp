// The one way the C++ drivers report errors; translated once into a Python
// ValueError subclass (xrdflow.CoreError) in bindings/module.cpp.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace xrdflow {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}

}  // namespace xrdflow

// A minimal work-sharing loop: items are claimed one at a time from an atomic
// counter, so uneven structures balance across threads.  Results never depend
// on the thread count because each item writes only its own output slot.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace xrdflow {

inline int resolve_threads(int requested, int64_t n_items) {
  int n = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (n_items < n) n = static_cast<int>(std::max<int64_t>(1, n_items));
  return n;
}

// Calls fn(i) for i in [0, n) on `threads` threads (<= 0: all cores); rethrows
// the first exception raised by any call after all threads have joined.
template <typename Fn>
void parallel_for(int64_t n, int threads, Fn&& fn) {
  const int n_threads = resolve_threads(threads, n);
  if (n_threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&]() {
    for (int64_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(n);
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(n_threads - 1);
  for (int t = 1; t < n_threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace xrdflow

// Copyright (c) mmlinattn contributors. All rights reserved.
// Per-device implementation table in the style of mmcv's device registry:
// `foo_impl` is the device-agnostic entry point; each backend registers its
// kernel for it with REGISTER_DEVICE_IMPL(foo_impl, CPU, foo_cpu) and
// foo_impl calls DISPATCH_DEVICE_IMPL(foo_impl, args...).
#ifndef MMLINATTN_PYTORCH_DEVICE_REGISTRY_HPP
#define MMLINATTN_PYTORCH_DEVICE_REGISTRY_HPP

#include <ATen/ATen.h>

#include <array>
#include <string>

namespace mmlinattn {

// One table per entry point: the template is keyed by the entry point's
// address, so entry points with equal signatures get separate tables.
template <typename F, F key>
class DeviceRegistry;

template <typename Ret, typename... Args, Ret (*key)(Args...)>
class DeviceRegistry<Ret (*)(Args...), key> {
 public:
  using Function = Ret (*)(Args...);

  static DeviceRegistry& instance() {
    static DeviceRegistry registry;
    return registry;
  }

  bool add(c10::DeviceType device, Function fn) {
    table_[static_cast<size_t>(device)] = fn;
    return true;
  }

  Function find(c10::DeviceType device) const {
    return table_[static_cast<size_t>(device)];
  }

 private:
  DeviceRegistry() { table_.fill(nullptr); }
  std::array<Function, static_cast<size_t>(
                           c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>
      table_;
};

// The device of the first tensor argument decides; all tensor arguments
// must live on it (checked, so a mixed call never reaches a kernel).
inline void collect_devices(std::vector<c10::Device>&) {}

template <typename T, typename... Rest>
void collect_devices(std::vector<c10::Device>& devices, const T& arg,
                     const Rest&... rest) {
  if constexpr (std::is_same_v<std::decay_t<T>, at::Tensor>) {
    if (arg.defined()) devices.push_back(arg.device());
  } else if constexpr (std::is_same_v<std::decay_t<T>,
                                      c10::optional<at::Tensor>>) {
    if (arg.has_value() && arg->defined()) devices.push_back(arg->device());
  }
  collect_devices(devices, rest...);
}

template <typename F, F key, typename... Args>
auto dispatch_device_impl(const char* name, Args&&... args) {
  std::vector<c10::Device> devices;
  collect_devices(devices, args...);
  TORCH_CHECK(!devices.empty(), name, ": no tensor argument");
  for (const auto& device : devices) {
    TORCH_CHECK_VALUE(device == devices.front(), name,
                      ": tensors on different devices (", devices.front(),
                      " and ", device, ")");
  }
  auto fn =
      DeviceRegistry<F, key>::instance().find(devices.front().type());
  TORCH_CHECK(fn != nullptr, name, ": no kernel for device ",
              devices.front(), " in mmlinattn._ext (",
              devices.front().is_cuda()
                  ? "rebuild with a GPU visible or FORCE_CUDA=1"
                  : "unsupported device",
              ")");
  return fn(std::forward<Args>(args)...);
}

}  // namespace mmlinattn

#define REGISTER_DEVICE_IMPL(key, device, fn)                         \
  static const bool key##_##device##_registered =                     \
      ::mmlinattn::DeviceRegistry<decltype(&key), key>::instance().add( \
          c10::DeviceType::device, fn)

#define DISPATCH_DEVICE_IMPL(key, ...)                                    \
  ::mmlinattn::dispatch_device_impl<decltype(&key), key>(#key, __VA_ARGS__)

#endif  // MMLINATTN_PYTORCH_DEVICE_REGISTRY_HPP

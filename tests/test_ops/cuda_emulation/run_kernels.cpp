// Copyright (c) mmlinattn contributors. All rights reserved.
// Test driver: runs the CUDA kernels of ops/csrc/common/cuda/ under the CPU
// emulation, launched through the same plan as the real launcher
// (gaussian_kernel_cuda_plan.cuh). One translation unit holds every
// instantiation; tests/test_ops/test_cuda_emulation.py compiles it with
// ASan and UBSan and checks the results against float64 references.
//
// usage: run_kernels CASES_FILE
// Every line of CASES_FILE is
//   name op dtype batch rows cols d e sms input_path output_path
// op: sqdist | gaussian | forward | grad | grad_kb; dtype: float | double.
// The input file holds float64 arrays back to back: sqdist / gaussian: q
// (batch, rows, d), k (batch, cols, d); forward: p (batch, rows, d), o
// (batch, cols, d), f (batch, cols, e); grad, grad_kb: p, o, f and a
// (batch, rows, e). The output file gets float64 arrays: out (batch, rows,
// cols) for sqdist / gaussian, else out (batch, rows, e or d) summed over the
// column splits, then kb (batch, rows, e) for grad_kb. Per case, stdout gets
//   name grid_x grid_y block_x kernel_d kernel_e e_chunks splits
#include "cuda_emulation.hpp"
// The kernels and the plan, compiled as plain C++ by the emulation.
#include "gaussian_kernel_cuda_plan.cuh"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace {

namespace mc = mmlinattn::cuda;

struct Case {
  std::string name, op, dtype;
  int64_t batch, rows, cols;
  int d, e, sms;
  std::string input, output;
};

class Reader {
 public:
  explicit Reader(const std::string& path)
      : in_(path, std::ios::binary) {
    if (!in_) throw std::runtime_error("cannot open " + path);
  }
  // The next count float64 values, converted to T (exactly count elements,
  // so ASan sees any read past the end).
  template <typename T>
  std::vector<T> take(int64_t count) {
    std::vector<double> raw(count);
    in_.read(reinterpret_cast<char*>(raw.data()), count * sizeof(double));
    if (!in_) throw std::runtime_error("input file too short");
    return std::vector<T>(raw.begin(), raw.end());
  }

 private:
  std::ifstream in_;
};

template <typename T>
void write(std::ofstream& out, const std::vector<T>& values) {
  const std::vector<double> raw(values.begin(), values.end());
  out.write(reinterpret_cast<const char*>(raw.data()),
            raw.size() * sizeof(double));
}

// The real launch is kernel<<<grid, block, 0, stream>>>(args...).
auto emulated_launch = [](auto kernel, dim3 grid, dim3 block,
                          auto... args) {
  cuda_emulation::launch(kernel, grid, block, args...);
};

template <typename T>
void run_sqdist(const Case& c, Reader& in, std::ofstream& out) {
  const auto q = in.take<T>(c.batch * c.rows * c.d);
  const auto k = in.take<T>(c.batch * c.cols * c.d);
  const auto plan = mc::plan_sqdist(c.batch, c.rows, c.cols, c.d);
  if (!plan.fits_grid()) throw std::runtime_error("grid too large");
  std::vector<T> result(c.batch * c.rows * c.cols);
  mc::launch_sqdist(plan, c.op == "gaussian", q.data(), k.data(),
                    result.data(), emulated_launch);
  write(out, result);
  std::cout << c.name << ' ' << plan.grid().x << ' ' << plan.grid().y << ' '
            << plan.block().x << " 0 0 1 1\n";
}

// Sum of the column-split partials, in split order.
template <typename T>
std::vector<T> sum_splits(const std::vector<T>& partial, int64_t splits) {
  const int64_t size = static_cast<int64_t>(partial.size()) / splits;
  std::vector<T> total(partial.begin(), partial.begin() + size);
  for (int64_t s = 1; s < splits; ++s)
    for (int64_t i = 0; i < size; ++i) total[i] += partial[s * size + i];
  return total;
}

int64_t numel(const std::array<int64_t, 4>& shape) {
  return shape[0] * shape[1] * shape[2] * shape[3];
}

template <typename T>
void run_fused(const Case& c, Reader& in, std::ofstream& out) {
  const mc::FusedMode mode = c.op == "forward" ? mc::kForward
                             : c.op == "grad"  ? mc::kGrad
                                               : mc::kGradWithKb;
  if (!mc::fused_supported(mode, c.d, c.e))
    throw std::runtime_error(c.name + ": d / e not covered by the kernels");
  const auto p = in.take<T>(c.batch * c.rows * c.d);
  const auto o = in.take<T>(c.batch * c.cols * c.d);
  const auto f = in.take<T>(c.batch * c.cols * c.e);
  const auto a = mode == mc::kForward ? std::vector<T>()
                                      : in.take<T>(c.batch * c.rows * c.e);
  const auto plan =
      mc::plan_fused<T>(mode, c.batch, c.rows, c.cols, c.d, c.e, c.sms);
  if (!plan.fits_grid()) throw std::runtime_error("grid too large");
  std::vector<T> partial(numel(plan.out_shape()));
  std::vector<T> partial_kb(mode == mc::kGradWithKb ? numel(plan.kb_shape())
                                                    : 0);
  mc::launch_fused<T>(plan, p.data(), o.data(), f.data(),
                      a.empty() ? nullptr : a.data(), partial.data(),
                      partial_kb.empty() ? nullptr : partial_kb.data(),
                      emulated_launch);
  write(out, sum_splits(partial, plan.splits));
  if (mode == mc::kGradWithKb) write(out, sum_splits(partial_kb, plan.splits));
  std::cout << c.name << ' ' << plan.grid().x << ' ' << plan.grid().y << ' '
            << plan.block().x << ' ' << plan.kernel_d << ' ' << plan.kernel_e
            << ' ' << plan.e_chunks << ' ' << plan.splits << '\n';
}

template <typename T>
void run_case(const Case& c) {
  Reader in(c.input);
  std::ofstream out(c.output, std::ios::binary);
  if (c.op == "sqdist" || c.op == "gaussian")
    run_sqdist<T>(c, in, out);
  else
    run_fused<T>(c, in, out);
  if (!out) throw std::runtime_error("cannot write " + c.output);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " CASES_FILE\n";
    return 2;
  }
  std::ifstream cases(argv[1]);
  std::string line;
  while (std::getline(cases, line)) {
    std::istringstream fields(line);
    Case c;
    if (!(fields >> c.name >> c.op >> c.dtype >> c.batch >> c.rows >>
          c.cols >> c.d >> c.e >> c.sms >> c.input >> c.output)) {
      std::cerr << "bad case line: " << line << '\n';
      return 2;
    }
    if (c.dtype == "float")
      run_case<float>(c);
    else
      run_case<double>(c);
  }
  return 0;
}

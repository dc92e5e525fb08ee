// Copyright (c) mmlinattn contributors. All rights reserved.
#include <torch/extension.h>

#include <vector>

at::Tensor gaussian_sqdist_forward(const at::Tensor& q, const at::Tensor& k,
                                   bool apply_exp);
std::vector<at::Tensor> gaussian_sqdist_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
    const c10::optional<at::Tensor>& kernel);
at::Tensor gaussian_kernel_matmul_forward(const at::Tensor& p,
                                          const at::Tensor& o,
                                          const at::Tensor& x);
std::vector<at::Tensor> gaussian_kernel_matmul_backward(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb);

at::Tensor focusing_forward(const at::Tensor& x, const at::Tensor& scale,
                            double p);
std::vector<at::Tensor> focusing_backward(const at::Tensor& grad,
                                          const at::Tensor& x,
                                          const at::Tensor& scale, double p,
                                          bool with_scale);

at::Tensor depthwise_conv2d_weight_grad(const at::Tensor& grad,
                                        const at::Tensor& input,
                                        int64_t kernel_h, int64_t kernel_w,
                                        int64_t pad_h, int64_t pad_w);

at::Tensor newton_schulz_steps(const at::Tensor& inv, const at::Tensor& mat,
                               int64_t num_iter);

std::vector<at::Tensor> focused_linear_forward(const at::Tensor& q,
                                               const at::Tensor& k,
                                               const at::Tensor& v,
                                               const at::Tensor& scale,
                                               double p, int64_t heads);
std::vector<at::Tensor> focused_linear_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& scale, const at::Tensor& kv,
    const at::Tensor& z, double p, int64_t heads, bool with_scale);

bool has_cuda() {
#ifdef MMLINATTN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmlinattn compiled ops (CPU kernels; CUDA kernels if built)";
  m.def("has_cuda", &has_cuda,
        "whether the extension was compiled with its CUDA kernels");
  m.def("gaussian_sqdist_forward", &gaussian_sqdist_forward,
        "exact squared distances (B*h, N, M) between q (B*h, N, d) and "
        "k (B*h, M, d); exp(-D/2) if apply_exp",
        py::arg("q"), py::arg("k"), py::arg("apply_exp"));
  m.def("gaussian_sqdist_backward", &gaussian_sqdist_backward,
        "gradients (dq, dk) of sqdist, or of exp(-D/2) given its output",
        py::arg("grad"), py::arg("q"), py::arg("k"),
        py::arg("kernel") = py::none());
  m.def("gaussian_kernel_matmul_forward", &gaussian_kernel_matmul_forward,
        "fused exp(-sqdist(p, o)/2) @ x without materialising the kernel",
        py::arg("p"), py::arg("o"), py::arg("x"));
  m.def("gaussian_kernel_matmul_backward", &gaussian_kernel_matmul_backward,
        "fused (dp, K b) with s_rc = K_rc (a_r . b_c), "
        "dp_r = sum_c s_rc (o_c - p_r)",
        py::arg("p"), py::arg("o"), py::arg("a"), py::arg("b"),
        py::arg("with_kb"));
  m.def("focusing_forward", &focusing_forward,
        "FLatten focusing function of the rows of x (R, C) with scale (C,)",
        py::arg("x"), py::arg("scale"), py::arg("p"));
  m.def("focusing_backward", &focusing_backward,
        "(grad_x, per-block scale partials or None) of focusing_forward",
        py::arg("grad"), py::arg("x"), py::arg("scale"), py::arg("p"),
        py::arg("with_scale"));
  m.def("focused_linear_forward", &focused_linear_forward,
        "(out, kv with the mean key as last column, normaliser) of FLatten's "
        "normalised focused linear attention of q (B, N, C), k, v (B, n, C)",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"),
        py::arg("p"), py::arg("heads"));
  m.def("focused_linear_backward", &focused_linear_backward,
        "(grad_q, grad_k, grad_v, per-block scale partials or None) of "
        "focused_linear_forward, given its kv and normaliser",
        py::arg("grad"), py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("scale"), py::arg("kv"), py::arg("z"), py::arg("p"),
        py::arg("heads"), py::arg("with_scale"));
  m.def("depthwise_conv2d_weight_grad", &depthwise_conv2d_weight_grad,
        "weight gradient (C, 1, kh, kw) of a stride-1 depthwise conv of "
        "input (B, C, H, W) with output gradient grad",
        py::arg("grad"), py::arg("input"), py::arg("kernel_h"),
        py::arg("kernel_w"), py::arg("pad_h"), py::arg("pad_w"));
  m.def("newton_schulz_steps", &newton_schulz_steps,
        "num_iter steps V <- 2V - (V A) V of inv V (batch, m, m) with "
        "mat A, each matrix iterated in cache by one thread",
        py::arg("inv"), py::arg("mat"), py::arg("num_iter"));
}

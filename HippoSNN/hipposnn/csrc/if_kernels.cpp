// Fused integrate-and-fire kernels for CPU (optional accelerator of hipposnn.neurons).
//
// The pure-PyTorch IF loop makes three passes over memory per timestep (add, compare, subtract),
// each reading and writing whole [B, C, H, W] tensors. Here each thread keeps a block of membranes
// in cache and walks the timesteps, reading the input current and writing the spike once: about a
// third of the memory traffic. Semantics are exactly those of the Python code in neurons.py.
//
// All tensors are float32 and dense with time as the outermost dimension: element i of step t is at
// offset t * N + i, and the membrane uses the same layout as one step (the Python wrapper checks it).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace {

constexpr int64_t kGrain = 8192;
constexpr float kHalf = 127.5f;

// One timestep for neurons [begin, end): restrict-qualified and branch-free so it vectorises.
inline void step_inference(const float* __restrict__ in, float* __restrict__ u, float* __restrict__ out,
                           float v, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float x = u[i] + in[i];
    const float s = static_cast<float>(x >= v);
    u[i] = x - v * s;
    out[i] = s;
  }
}

inline void step_train(const float* __restrict__ in, float* __restrict__ u, float* __restrict__ out,
                       uint8_t* __restrict__ code, float v, float k, int64_t begin, int64_t end) {
  const float two_v = 2.0f * v;
  for (int64_t i = begin; i < end; ++i) {
    const float x = u[i] + in[i];
    code[i] = static_cast<uint8_t>(std::min(std::max(x, 0.0f), two_v) * k);
    const float s = static_cast<float>(x >= v);
    u[i] = x - v * s;
    out[i] = s;
  }
}

inline void step_backward(const float* __restrict__ g, const uint8_t* __restrict__ code, float* __restrict__ acc,
                          float* __restrict__ out, float scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float h = kHalf - std::fabs(static_cast<float>(code[i]) - kHalf);
    acc[i] += g[i] * h;
    out[i] = acc[i] * scale;
  }
}

// Inference / conversion: spikes for current [T, N]; membrane [N] is updated in place.
torch::Tensor if_forward(torch::Tensor current, torch::Tensor membrane, double threshold) {
  const int64_t steps = current.size(0);
  const int64_t n = steps ? current.numel() / steps : 0;
  auto spikes = torch::empty_like(current);
  const float* in = current.data_ptr<float>();
  float* u = membrane.data_ptr<float>();
  float* out = spikes.data_ptr<float>();
  const float v = static_cast<float>(threshold);
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = 0; t < steps; ++t) {
      step_inference(in + t * n, u, out + t * n, v, begin, end);
    }
  });
  return spikes;
}

// Training: spikes plus the 8-bit code of clamp(u_pre, 0, 2v) * 127.5 / v used by the surrogate. The
// membrane starts at `initial` (the low-latency path's start potential) without copying the current.
std::vector<torch::Tensor> if_forward_train(torch::Tensor current, double threshold, double initial) {
  const int64_t steps = current.size(0);
  const int64_t n = steps ? current.numel() / steps : 0;
  auto spikes = torch::empty_like(current);
  auto packed = torch::empty_like(current, current.options().dtype(torch::kUInt8));
  auto membrane = torch::full({n}, initial, current.options());
  const float* in = current.data_ptr<float>();
  float* u = membrane.data_ptr<float>();
  float* out = spikes.data_ptr<float>();
  uint8_t* code = packed.data_ptr<uint8_t>();
  const float v = static_cast<float>(threshold);
  const float k = static_cast<float>(kHalf / threshold);
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = 0; t < steps; ++t) {
      step_train(in + t * n, u, out + t * n, code + t * n, v, k, begin, end);
    }
  });
  return {spikes, packed};
}

// Backward with the reset detached: dL/dI[t] = scale * sum_{t' >= t} g[t'] * (127.5 - |q[t'] - 127.5|).
torch::Tensor if_backward(torch::Tensor grad, torch::Tensor packed, double scale) {
  const int64_t steps = grad.size(0);
  const int64_t n = steps ? grad.numel() / steps : 0;
  auto result = torch::empty_like(grad);
  const float* g = grad.data_ptr<float>();
  const uint8_t* code = packed.data_ptr<uint8_t>();
  float* out = result.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(end - begin, 0.0f);
    for (int64_t t = steps - 1; t >= 0; --t) {
      step_backward(g + t * n + begin, code + t * n + begin, acc.data(), out + t * n + begin, sc, end - begin);
    }
  });
  return result;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("if_forward", &if_forward, "IF forward (inference), membrane updated in place");
  m.def("if_forward_train", &if_forward_train, "IF forward with packed surrogate codes");
  m.def("if_backward", &if_backward, "IF backward, reset detached");
}

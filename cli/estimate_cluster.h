// `reckon estimate --gpus N`: the data-parallel section — per-GPU memory by category, max batch per GPU, the
// communication volume and time per step (alpha-beta model of the GPU's link), and the training days, for ZeRO
// stages 0 to 3 side by side. Every figure is one rank's step as reckon implements it (the replay and counts that
// `mpirun -np N reckon reconcile --zero S` proves per rank), beside the ZeRO paper's rules.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "estimators/time.h"
#include "model/config.h"

namespace reckon {

struct ClusterOptions {
  int64_t gpus = 1;           // data-parallel ranks
  bool gpus_given = false;    // --gpus: the section is printed
  std::string link = "auto";  // auto, nvlink, infiniband
  double link_gbps = 0;       // given: replaces the link's bandwidth (GB/s per direction per GPU)
  bool link_gbps_given = false;
  double link_latency_us = 0;  // given: replaces the link's α per ring step
  bool link_latency_given = false;
};

struct ClusterReport {
  std::string text;  // markdown
  nlohmann::json json;
};

// `config.model.batch_size` is the batch per GPU; the run's tokens (train_steps × train_batch × T) set the steps
// at the global batch N × batch. Throws std::invalid_argument naming the flag for a bad option.
// The link of --gpus N (estimators/time.h gpu_link) with --link-gbps / --link-latency-us applied, each checked.
Link checked_link(const GpuSpec& gpu, const ClusterOptions& o);

ClusterReport cluster_report(const TrainConfig& config, const GpuSpec& gpu, double peak_flops, double mfu,
                             int64_t budget, const std::string& budget_text, int64_t train_steps, int64_t train_batch,
                             const ClusterOptions& options);

}  // namespace reckon

// Training checkpoints in safetensors (runtime/safetensors.h), readable by any framework:
//   tensors   every parameter under its state-dict name (tok_emb.weight, layers.0.attn.wq.weight, …) in its own
//             dtype (float32, or bfloat16 in precision = bf16), and the optimizer's state under the names the
//             allocator knows: "<param>.exp_avg", "<param>.exp_avg_sq" (float32), and "<param>.master" (float32
//             master weights, precision = bf16);
//   metadata  format "reckon-checkpoint-1", steps (training steps done: the data position, since step k trains
//             on batch k of the data), optimizer_steps (AdamW's bias-correction count), preset, config (every
//             field as key=value lines, model/config.h config_overrides), data (the data source), data_identity
//             (its size and fingerprint, or "random").
// Restoring copies every tensor back and sets the optimizer's step count, so the next steps equal those of an
// uninterrupted run bit for bit (tests/test_checkpoint.cpp, every precision). Hugging Face-format files (weights
// under transformers' names, model/hf_checkpoint.h) are written by hf_checkpoint_bytes and start runs through
// --init-from; they cannot be resumed (no optimizer state).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "model/config.h"
#include "optim/step.h"
#include "runtime/safetensors.h"

namespace reckon {

// The most training steps one `reckon train` runs (--steps): a resumed checkpoint's count leaves room for them.
constexpr int64_t kMaxStepsPerRun = 10'000'000;

struct CheckpointMeta {
  TrainConfig config;
  int64_t steps = 0;            // training steps done
  int64_t optimizer_steps = 0;  // equal to steps for a run that started from scratch
  std::string data;             // the data source ("random" or a path)
  std::string data_identity;    // what it held (model/data.h TokenData::identity); empty in older checkpoints
};

// The checkpoint file's bytes for `run` after `steps` training steps of `config` on `data` (its identity, if given,
// is stored so a resume can tell that the file changed).
std::string checkpoint_bytes(TrainingSession& run, const TrainConfig& config, int64_t steps, const std::string& data,
                             const std::string& data_identity = "");
// Reads a checkpoint's metadata; the config is rebuilt and validated. Counts are parsed strictly (decimal digits
// only) and bounded: steps so that steps + kMaxStepsPerRun training steps' token positions (steps · batch_size ·
// gradient_accumulation_steps · context_length) fit int64, optimizer_steps ≤ steps. The config must name each key at
// most once and give the model's shape (vocab_size, d_model, num_layers, num_heads, context_length, batch_size); keys
// added to reckon after the file was written take their defaults. Throws std::invalid_argument naming the path and the
// field.
CheckpointMeta read_checkpoint_meta(const Safetensors& file, const std::string& path);
// Copies parameters and optimizer state from `file` into `run` (built from the checkpoint's config) and sets
// the optimizer's step count. Throws std::invalid_argument naming a missing, extra or mismatched tensor.
void restore_checkpoint(TrainingSession& run, const Safetensors& file, const CheckpointMeta& meta,
                        const std::string& path);
// Copies only the parameters of a reckon checkpoint into `model` (--init-from: a fresh optimizer, this run's config;
// the file's optimizer state is skipped). Throws std::invalid_argument naming a missing, mismatched or foreign tensor.
void restore_parameters(Transformer& model, const Safetensors& file, const std::string& path);
// Whether `file` is a reckon checkpoint (its metadata's format), as opposed to a Hugging Face state dict.
bool is_reckon_checkpoint(const Safetensors& file);
// A Hugging Face-format file of `run`'s parameters (model/hf_checkpoint.h): metadata format "pt" (what transformers
// requires of a safetensors checkpoint), the architecture, and reckon's config and step count for the record.
std::string hf_checkpoint_bytes(TrainingSession& run, const TrainConfig& config, int64_t steps);
// The gradients of `model` under the parameters' names, then `extra` tensors (the batch they came from), with
// `metadata` (--dump-grads).
std::string gradients_bytes(const Transformer& model, const std::vector<std::pair<std::string, Tensor>>& extra,
                            const std::map<std::string, std::string>& metadata);

}  // namespace reckon

#include "optim/step.h"

#include "model/data.h"

namespace reckon {

double training_step(Transformer& model, AdamW& optimizer, const Tensor& tokens, const Tensor& targets) {
  {
    PhaseScope phase(Phase::optimizer);
    model.zero_grad();
  }
  const double loss = model.forward(tokens, targets);
  model.backward();
  optimizer.step();
  return loss;
}

StepMeasurement measure_steady_step(const TrainConfig& config) {
  const ModelConfig& m = config.model;
  StepMeasurement out;
  Transformer model(m, config.seed);
  AdamW opt(model.parameters(), config.optim);
  const Tensor tokens = Tensor::empty({m.batch_size, m.context_length}, Category::activation, "batch.tokens", DType::i32);
  const Tensor targets = Tensor::empty({m.batch_size, m.context_length}, Category::activation, "batch.targets", DType::i32);
  TokenData data = TokenData::random(m.vocab_size, config.seed);
  data.fill_batch(tokens, targets, 0);
  training_step(model, opt, tokens, targets);
  data.fill_batch(tokens, targets, 1);
  counters().reset();
  tracker().reset_peak_stats();
  out.loss = training_step(model, opt, tokens, targets);
  out.memory = tracker().stats();
  out.live_at_peak = tracker().live_at_peak();
  for (const LiveBlock& b : out.live_at_peak) {
    if (b.name.rfind("onednn.scratchpad.", 0) == 0) out.scratchpad_at_peak += b.allocated_bytes;
  }
  out.counts = counters().by_op();
  return out;
}

}  // namespace reckon

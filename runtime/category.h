// What a tracked byte is for: PyTorch's vocabulary of a training step's memory.
#pragma once

#include <array>
#include <cstdint>

namespace reckon {

enum class Category : uint8_t { parameter, gradient, optimizer_state, activation, temporary };
constexpr int kNumCategories = 5;
const char* category_name(Category c);
std::array<Category, kNumCategories> all_categories();

}  // namespace reckon

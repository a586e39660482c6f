// Element types of tensors and of the blocks the tracking allocator records.
#pragma once

#include <cstdint>
#include <iosfwd>

namespace reckon {

enum class DType : uint8_t { f32, i32, bf16 };
int64_t dtype_bytes(DType dtype);     // 4, 4, 2
const char* dtype_name(DType dtype);  // "float32", "int32", "bfloat16"
// For GoogleTest's parameter names and messages: prints dtype_name.
void PrintTo(DType dtype, std::ostream* os);

}  // namespace reckon

# Android arm64-v8a (Snapdragon phones) through the NDK's own toolchain file:
#   ANDROID_NDK=/path/to/ndk cmake -B build/android -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE=targets/toolchains/android-arm64.cmake
# arm64-v8a is armv8.0: the baseline build runs everywhere and neon_dotprod is picked at run time (HWCAP).
# Tests (FLOE_BUILD_TESTS=ON) are Android executables: they run on a device (adb push), or under qemu-aarch64 when
# FLOE_ANDROID_QEMU_ROOT points at a copy of an Android system image (/system/bin/linker64, /system/lib64).
if(NOT DEFINED ANDROID_NDK OR ANDROID_NDK STREQUAL "")
  if(DEFINED ENV{ANDROID_NDK} AND NOT "$ENV{ANDROID_NDK}" STREQUAL "")
    set(ANDROID_NDK "$ENV{ANDROID_NDK}")
  elseif(DEFINED ENV{ANDROID_NDK_HOME} AND NOT "$ENV{ANDROID_NDK_HOME}" STREQUAL "")
    set(ANDROID_NDK "$ENV{ANDROID_NDK_HOME}")
  endif()
endif()
if(NOT ANDROID_NDK OR NOT EXISTS "${ANDROID_NDK}/build/cmake/android.toolchain.cmake")
  message(FATAL_ERROR
    "android-arm64.cmake: set ANDROID_NDK (environment or -DANDROID_NDK=...) to an Android NDK (r23 or newer); "
    "got '${ANDROID_NDK}', which has no build/cmake/android.toolchain.cmake")
endif()

set(ANDROID_ABI arm64-v8a CACHE STRING "Android ABI")
set(ANDROID_PLATFORM android-24 CACHE STRING "Minimum Android API level")
set(ANDROID_STL c++_static CACHE STRING "Android C++ runtime")
include("${ANDROID_NDK}/build/cmake/android.toolchain.cmake")

set(FLOE_QEMU_CPU "cortex-a72" CACHE STRING "qemu-aarch64 -cpu for tests (empty: QEMU_CPU from the environment)")
set(FLOE_ANDROID_QEMU_ROOT "" CACHE PATH "Android system image root for running tests under qemu-aarch64")
if(FLOE_ANDROID_QEMU_ROOT)
  set(FLOE_CROSS_SYSROOT "${FLOE_ANDROID_QEMU_ROOT}")
  include(${CMAKE_CURRENT_LIST_DIR}/floe_qemu.cmake)
  floe_set_qemu_emulator(qemu-aarch64)
endif()

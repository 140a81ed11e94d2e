# Cross build for 64-bit ARM Linux (Raspberry Pi OS 64-bit, Debian/Ubuntu arm64) with Debian's cross GCC
# (apt: g++-aarch64-linux-gnu, qemu-user). Tests run under qemu-aarch64 with the CPU model FLOE_QEMU_CPU:
# cortex-a72 (Pi 4: NEON only), cortex-a76 / max (dotprod), or empty to take QEMU_CPU from the environment at
# test time (how the aarch64-release test presets run one build on two CPUs).
# CPU tuning (-mcpu=...) is not set here: it comes from the preset (CMAKE_CXX_FLAGS).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(FLOE_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${FLOE_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${FLOE_CROSS_TRIPLE}-g++)

set(FLOE_CROSS_SYSROOT /usr/${FLOE_CROSS_TRIPLE} CACHE PATH "Target libraries (qemu -L prefix)")
set(CMAKE_FIND_ROOT_PATH ${FLOE_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(FLOE_QEMU_CPU "cortex-a72" CACHE STRING "qemu-aarch64 -cpu for tests (empty: QEMU_CPU from the environment)")
include(${CMAKE_CURRENT_LIST_DIR}/floe_qemu.cmake)
floe_set_qemu_emulator(qemu-aarch64)

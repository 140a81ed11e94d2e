# Cross build for 32-bit ARM Linux, hard float (Raspberry Pi OS 32-bit on Pi 2/3/4, other armv7 boards) with
# Debian's cross GCC (apt: g++-arm-linux-gnueabihf, qemu-user). The whole build assumes NEON (-mfpu=neon, VFPv3:
# no fused multiply-add); dispatch.cpp still checks HWCAP_NEON before using the neon variant.
# Tests run under qemu-arm with the CPU model FLOE_QEMU_CPU (cortex-a15 by default; cortex-a7 / cortex-a8 / max).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)

set(FLOE_CROSS_TRIPLE arm-linux-gnueabihf)
set(CMAKE_C_COMPILER ${FLOE_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${FLOE_CROSS_TRIPLE}-g++)
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfpu=neon -mfloat-abi=hard")
set(CMAKE_CXX_FLAGS_INIT "-march=armv7-a -mfpu=neon -mfloat-abi=hard")

set(FLOE_CROSS_SYSROOT /usr/${FLOE_CROSS_TRIPLE} CACHE PATH "Target libraries (qemu -L prefix)")
set(CMAKE_FIND_ROOT_PATH ${FLOE_CROSS_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(FLOE_QEMU_CPU "cortex-a15" CACHE STRING "qemu-arm -cpu for tests (empty: QEMU_CPU from the environment)")
include(${CMAKE_CURRENT_LIST_DIR}/floe_qemu.cmake)
floe_set_qemu_emulator(qemu-arm)

// The avx_vnni table compiled with AVX2 flags only and vpdpbusd emulated (x86_lanes.h): "vnni_emu", the VNNI
// code path of the quantized gemms on any AVX2 CPU (Zen1 CI included). Never dispatched; test_variants.h adds it.
#define FLOE_DPBUSD_EMULATED 1
#include "../../src/floe_native/arch/x86/avx_vnni.cpp"

// Host emulation of the CUDA execution model, for running gpudp's kernels on the CPU in tests.
//
// Blocks run one after another. The threads of a block run one after another as plain calls, or, for kernels
// that call __syncthreads, as fibers on the calling OS thread: __syncthreads switches back to a
// scheduler that resumes every fiber of the block in turn, so all threads reach a barrier before any passes
// it. __shared__ becomes static storage (only one block is alive at a time). No warp-level primitives.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

// Fibers: a minimal stack switch on x86-64 (no system calls); ucontext elsewhere and under sanitizers.
#if defined(__x86_64__) && !defined(GPUDP_EMU_UCONTEXT)
#define GPUDP_EMU_ASM_SWITCH 1
// Saves the callee-saved registers on the current stack, stores its stack pointer in *from, continues on `to`.
extern "C" void gpudp_emu_switch(void** from, void* to);
asm(R"(
    .text
    .globl gpudp_emu_switch
    .type gpudp_emu_switch, @function
gpudp_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gpudp_emu_switch, .-gpudp_emu_switch
)");
#else
#include <ucontext.h>
#endif

struct GpudpEmuFiber {
#ifdef GPUDP_EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t ctx;
#endif
    std::vector<char> stack;
    dim3 idx;
    bool done = false;
};

inline bool gpudp_emu_fiber_mode = false;
#ifdef GPUDP_EMU_ASM_SWITCH
inline void* gpudp_emu_scheduler_sp = nullptr;
#else
inline ucontext_t gpudp_emu_scheduler;
#endif
inline GpudpEmuFiber* gpudp_emu_current = nullptr;
inline void (*gpudp_emu_body)(void*) = nullptr;   // runs the kernel for the current thread
inline void* gpudp_emu_body_arg = nullptr;

// From a fiber back to the scheduler.
inline void gpudp_emu_yield()
{
#ifdef GPUDP_EMU_ASM_SWITCH
    gpudp_emu_switch(&gpudp_emu_current->sp, gpudp_emu_scheduler_sp);
#else
    swapcontext(&gpudp_emu_current->ctx, &gpudp_emu_scheduler);
#endif
}

// From the scheduler into fiber f, until it yields or finishes.
inline void gpudp_emu_resume(GpudpEmuFiber& f)
{
#ifdef GPUDP_EMU_ASM_SWITCH
    gpudp_emu_switch(&gpudp_emu_scheduler_sp, f.sp);
#else
    swapcontext(&gpudp_emu_scheduler, &f.ctx);
#endif
}

inline void __syncthreads()
{
    if (!gpudp_emu_fiber_mode)
        throw std::logic_error("__syncthreads() in a kernel the emulator launched without fibers");
    gpudp_emu_yield();
}

inline void gpudp_emu_trampoline()
{
    gpudp_emu_body(gpudp_emu_body_arg);
    gpudp_emu_current->done = true;
#ifdef GPUDP_EMU_ASM_SWITCH
    gpudp_emu_yield();   // never resumed
    __builtin_trap();
#endif   // ucontext: returning resumes the scheduler through uc_link
}

inline void gpudp_emu_prepare(GpudpEmuFiber& f)
{
    f.done = false;
    if (f.stack.empty()) f.stack.resize(1 << 16);
#ifdef GPUDP_EMU_ASM_SWITCH
    // A fresh stack as gpudp_emu_switch leaves it: six saved registers, then the address `ret` jumps to, then a
    // fake return address, so that the entry sees the stack alignment of a normal call.
    auto top = reinterpret_cast<std::uintptr_t>(f.stack.data() + f.stack.size()) & ~std::uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&gpudp_emu_trampoline);
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    f.sp = sp;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &gpudp_emu_scheduler;
    makecontext(&f.ctx, gpudp_emu_trampoline, 0);
#endif
}

template <typename... A, std::size_t... I>
void gpudp_emu_call(void (*k)(A...), void** args, std::index_sequence<I...>)
{
    k(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename T> char gpudp_emu_code()
{
    if constexpr (std::is_pointer_v<T>) return 'p';
    else if constexpr (std::is_same_v<T, int>) return 'i';
    else if constexpr (std::is_same_v<T, long long>) return 'q';
    else if constexpr (std::is_same_v<T, float>) return 'f';
    else if constexpr (std::is_same_v<T, double>) return 'd';
    else return '?';
}

template <typename... A> std::string gpudp_emu_signature_of(void (*)(A...))
{
    std::string s;
    ((s += gpudp_emu_code<A>()), ...);
    return s;
}

template <typename... A> struct GpudpEmuLaunch {
    void (*k)(A...);
    void** args;
    static void body(void* self)
    {
        auto* l = static_cast<GpudpEmuLaunch*>(self);
        gpudp_emu_call(l->k, l->args, std::index_sequence_for<A...>{});
    }
};

template <typename... A>
void gpudp_emu_run(void (*k)(A...), dim3 grid, dim3 block, void** args, int fibers)
{
    gridDim = grid;
    blockDim = block;
    GpudpEmuLaunch<A...> launch{k, args};
    const unsigned nt = block.x * block.y * block.z;
    static std::vector<GpudpEmuFiber> fs;   // fibers and their stacks are kept from launch to launch
    if (fibers && fs.size() < nt) fs.resize(nt);
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3{bx, by, bz};
        if (!fibers) {
            gpudp_emu_fiber_mode = false;
            for (unsigned tz = 0; tz < block.z; ++tz)
            for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx) {
                threadIdx = dim3{tx, ty, tz};
                GpudpEmuLaunch<A...>::body(&launch);
            }
            continue;
        }
        gpudp_emu_fiber_mode = true;
        gpudp_emu_body = &GpudpEmuLaunch<A...>::body;
        gpudp_emu_body_arg = &launch;
        for (unsigned t = 0; t < nt; ++t) {
            fs[t].idx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            gpudp_emu_prepare(fs[t]);
        }
        for (bool pending = true; pending;) {   // one round: every live thread runs to its next barrier or exit
            pending = false;
            for (unsigned t = 0; t < nt; ++t) {
                GpudpEmuFiber& f = fs[t];
                if (f.done) continue;
                gpudp_emu_current = &f;
                threadIdx = f.idx;
                gpudp_emu_resume(f);
                pending = pending || !f.done;
            }
        }
        gpudp_emu_fiber_mode = false;
    }
}

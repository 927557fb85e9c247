;; A messaging provider whose `send` grows its function table until growth fails, then traps.
;; No Rust guest can emit `table.grow`, so this one is core WebAssembly: the host's tests make it
;; a component of `greentic:messaging/provider@1.0.0` with `greentic_interfaces::synth`, with
;; `provider.json` embedded beside it.
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (i32.const 1024))
  (func (export "greentic:messaging/outbound@1.0.0#send") (param i32) (result i32)
    ;; 4096 elements at a time until the host says no (table.grow answers -1) ...
    (loop $grow
      (br_if $grow
        (i32.ne
          (table.grow $t (ref.null func) (i32.const 4096))
          (i32.const -1))))
    ;; ... and then a guest that did not get its table traps.
    unreachable)
  (func (export "cabi_post_greentic:messaging/outbound@1.0.0#send") (param i32)))

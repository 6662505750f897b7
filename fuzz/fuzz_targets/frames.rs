//! Client frames, cut from arbitrary bytes, through a relay core: see
//! `relay::fuzzing` for the input format and the rules checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| relay::fuzzing::frames(data));

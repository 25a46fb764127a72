fn main() {
    let init: &[u8] = include_bytes!(env!("NEMOCLAW_INIT_PATH"));
    println!("{} {}", init.len(), env!("NEMOCLAW_INIT_TARGET"));
}

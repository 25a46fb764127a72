fn main() {
    println!("nemoclaw-init placeholder");
}

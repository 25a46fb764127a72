//! The one thing the build reads from an ELF file: its machine (`e_machine`), from
//! the first bytes of the file. A leaf, so the rootfs model can note each file's
//! machine as it streams by without knowing about platforms.

/// ELF `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// ELF `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;

/// Bytes of a file's head needed to read its ELF machine.
pub const HEAD_LEN: usize = 20;

/// The ELF `e_machine` of a file starting with `head` (at least [`HEAD_LEN`] bytes
/// for an answer): None when it is not ELF or too short.
pub fn machine(head: &[u8]) -> Option<u16> {
    if head.len() < HEAD_LEN || !head.starts_with(b"\x7fELF") {
        return None;
    }
    let b = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(b),
        _ => u16::from_le_bytes(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_machine_reads_both_byte_orders() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[5] = 1;
        h[18] = 183;
        assert_eq!(machine(&h), Some(EM_AARCH64));
        h[5] = 2;
        h[18] = 0;
        h[19] = 62;
        assert_eq!(machine(&h), Some(EM_X86_64));
        assert_eq!(machine(&h[..19]), None);
        assert_eq!(machine(b"#!/bin/sh\n\0\0\0\0\0\0\0\0\0\0\0"), None);
    }
}

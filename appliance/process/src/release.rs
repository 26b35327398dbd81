//! Which release this box runs: the image's `IMAGE_VERSION` in os-release, written when the
//! image was built, so that an update bundle's version is what the box reports and compares
//! after it booted the new slot (a binary can ship in several images). Outside an image (a
//! demo box, a test), the binary's own version.

use std::path::Path;

/// The release running here. The image's os-release names it when the image is a ClinicBox
/// one (`IMAGE_ID=clinicbox-<board>`).
pub fn running_release() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .and_then(|text| image_version(&text))
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
}

/// `IMAGE_VERSION` of an os-release file whose `IMAGE_ID` is a ClinicBox image's.
fn image_version(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix('=')?;
            Some(
                value
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_owned(),
            )
        })
    };
    field("IMAGE_ID")?.starts_with("clinicbox-").then_some(())?;
    field("IMAGE_VERSION").filter(|v| !v.is_empty() && v.len() <= 64)
}

#[cfg(test)]
mod tests {
    use super::image_version;

    #[test]
    fn a_clinicbox_image_names_its_release() {
        let text =
            "PRETTY_NAME=\"Debian GNU/Linux 12\"\nIMAGE_ID=clinicbox-nuc\nIMAGE_VERSION=0.2.1\n";
        assert_eq!(image_version(text).as_deref(), Some("0.2.1"));
    }

    #[test]
    fn another_system_does_not() {
        assert_eq!(image_version("ID=debian\nIMAGE_VERSION=12\n"), None);
        assert_eq!(image_version("IMAGE_ID=clinicbox-nuc\n"), None);
    }
}

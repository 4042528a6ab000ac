"""assemble_ffmpeg: cut clips into a film with one audio track and subtitles."""

"""Where video frames come from: the frame source interface and the sources for arrays and
folders of frames (``base``), video files through PyAV (``file``), and ``open_frames``, which
opens any of them (``open``)."""

"""Training: the ESRGAN teacher (PSNR then GAN stage) and its distillation into the student (torch)."""

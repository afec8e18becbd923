"""fermodels.evaluation: what the shipped models cost and score, measured the way they are deployed.

    measure       one rate point: bytes, PSNR, MS-SSIM, every classifier's accuracy
    deployment    our points through the edge encoder, the bitstream and the server's decoder
    baselines     Pillow's codecs (JPEG, WebP, JPEG 2000, AVIF) as whole files
    comparison    rate-accuracy maths: frontier, BD-rate, bytes at an accuracy, the default quality
    report        results.md, the plots, the model card's metrics, runs compared
    cli           fereval (the curves, --compare, --photos)
    photos        fereval --photos: the deployed path from synthetic photos, through a real ferserver
    calibration   python -m fermodels.evaluation.calibration: the temperature per model, and `tempered`,
                  which the server applies (numpy only)

Kept empty on purpose: the server imports `calibration.tempered` without torch.
"""

"""fermodels.evaluation: what the shipped models cost and score, measured the way they are deployed.

    measure       one rate point: bytes, PSNR, MS-SSIM, every classifier's accuracy
    deployment    our points through the edge encoder, the bitstream and the server's decoder
    baselines     Pillow's codecs (JPEG, WebP, JPEG 2000, AVIF) as whole files
    comparison    rate-accuracy maths: frontier, BD-rate, bytes at an accuracy, the default quality
    report        results.md, the plots, the model card's metrics, runs compared
    cli           fereval (the curves, --compare, --photos, --robustness)
    photos        fereval --photos: the deployed path from synthetic photos, through a real ferserver
    robustness    fereval --robustness: accuracy under fermodels.perturb's fixed perturbations
    calibration   python -m fermodels.evaluation.calibration: the temperature per model (the server applies
                  it with ferwire.card.tempered), ECE and per-class recall

Kept empty: importing one module of the package loads no other.
"""

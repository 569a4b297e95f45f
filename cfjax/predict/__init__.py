"""`--mode=predict`: a trained run applied to a folder of photos of any size, format and name; per-photo
classes, p_fake and abstention, full-resolution maps, masks, overlays and counterfactuals, tables and a
static HTML report. See docs/predicting.md."""

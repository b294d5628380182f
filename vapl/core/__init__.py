"""The paper's tensor code, plain torch with no Lightning import: prompts, masks, refinement, losses,
saliency, backbones, metrics, figures of samples and the yes/no tensor code of CRAYON."""

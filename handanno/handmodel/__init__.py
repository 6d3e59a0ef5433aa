"""The hand model: the MANO layer, model loading, joint axes and handanno's open hand model."""

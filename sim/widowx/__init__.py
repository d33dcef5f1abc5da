"""WidowX 250 tabletop scenes in plain MuJoCo (Bridge-style), their tasks and scripted experts."""

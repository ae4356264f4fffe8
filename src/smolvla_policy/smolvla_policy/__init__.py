"""SmolVLA policy for ROS 2: the model, a ROS-free runtime, the policy node and the chunk executor."""

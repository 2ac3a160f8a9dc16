print("smlt")
